"""Paper B cross-modal RGB/depth re-ID: embedder, losses, PK sampler, distillation, extractor."""
