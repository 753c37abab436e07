"""Single-image 3D grounding (LLMI3D path): one RGB image + intrinsics → the referred object's 3D box."""
