"""Corpus recipes: raw IEMOCAP / CMU-MOSEI releases -> aligned per-utterance clips and one manifest."""
