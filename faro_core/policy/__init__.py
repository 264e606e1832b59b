"""Policy stage: reference LM, Gibbs policy over candidates, generation, RLOO fine-tuning (DESIGN §8)."""
