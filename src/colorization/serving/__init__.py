"""The colorizer for others: colorize's files in and out (safely), the demo page, ONNX, the exported model's card."""
