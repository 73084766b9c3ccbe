"""Shipped default models: ``<name>.safetensors`` + ``<name>.json`` (model card)."""
