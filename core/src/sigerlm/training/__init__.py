"""The modality-neutral ``train`` step and its checkpoints (imports torch: load it lazily)."""
