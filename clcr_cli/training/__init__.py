"""Training and running models on the feature store: batches (``data``), the training
loop (``loop``), predictions and saved models (``inference``). Used by the train, eval,
ablate and noise stages; knows nothing of stage folders or the command line."""
