"""Geometry without ROS: camera models, oriented boxes, frame conventions."""
