"""Where a segmented object is in 3D: depth aligned to the colour camera → position, extent and
points in the camera's optical frame (`depth`)."""
