"""Plain TensorFlow/Keras source for a built cell: what ``%%masked_net NAME --code`` prints."""

from maskmagic.codegen.source import LITERAL_LIMIT, encode_mask, to_source

__all__ = ["LITERAL_LIMIT", "encode_mask", "to_source"]
