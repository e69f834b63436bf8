"""What visitors send, made safe: images, pair and labelled sets, text and number checks, presets."""
