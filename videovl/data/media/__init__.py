"""Media: decoding videos and images (a path or bytes), choosing frames, clip transforms, re-encoding."""
