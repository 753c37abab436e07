"""A simulated RGB-D camera in procedural indoor scenes, with exact ground truth.

Scenes are rooms (floor, four walls, ceiling) holding furniture and small objects of
known category, colour, size and pose; small objects rest on furniture tops. A level
pinhole camera inside the room renders them by vectorised ray casting into an RGB
image, metric depth and an instance mask; a sensor model then adds Kinect-like depth
noise (sigma = k·z²), missing returns (random dropout, out of range, grazing angles)
and edge artefacts (flying pixels and dropout at depth discontinuities).

Modules, in the order a frame is made:

* ``scene``: the scene (room, camera, objects), its frames and its JSON format;
* ``placement``: random scenes (``SceneConfig``, ``generate_scene``);
* ``render``: the noise-free ray cast (``ray_cast``);
* ``sensor``: the depth camera's effects (``SensorConfig``, ``apply_sensor_model``);
* ``frames``: a rendered frame with its ground truth (``render``, ``simulate``, ``save_frame``);
* ``cli``: ``threed-llm sim`` and its previews.
"""
