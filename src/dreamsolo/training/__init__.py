"""DreamBooth fine-tuning: the loss, cached inputs and the loop."""
