"""Prompts: report text reading, MedKLIP triplets, vocabularies, and the prompt modules of the generator."""
