"""Per-modality feature extraction: mel spectrograms and chunks (audio), MTCNN face crops (faces),
text tokenizer/encoder loading (text). Preprocessing (:mod:`e2e.preprocess`) and the dataset use these."""
