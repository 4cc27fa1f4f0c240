"""Training side: data, model definition, training, export, evaluation."""
