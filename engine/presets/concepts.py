"""The concepts the presets make visible: id -> a short name, in our words (the ids are the
course outline's, shared/CONCEPTS.md). Pages show "E1 · Vanishing gradients", never a bare id."""

CONCEPTS = {
    "A1": "Neurons, layers, weights and biases",
    "A2": "Why hidden layers and non-linearity",
    "A3": "Input normalisation",
    "A4": "Hand-made features vs learned ones",
    "B1": "Activation functions",
    "B2": "Softmax outputs",
    "B3": "Saturated and dead units",
    "C1": "Loss functions",
    "C2": "Forward pass and backpropagation",
    "D1": "Batch, mini-batch and stochastic descent",
    "D2": "Learning rate: too low, too high, divergence",
    "D3": "Optimizers",
    "D4": "Learning-rate schedules",
    "E1": "Vanishing gradients",
    "E2": "Exploding gradients and clipping",
    "E3": "Weight initialisation",
    "E4": "Batch and layer normalisation",
    "E5": "Residual connections",
    "F1": "Overfitting, underfitting and data splits",
    "F2": "L1 / L2 regularisation and weight decay",
    "F3": "Dropout",
    "F4": "Early stopping",
    "F5": "Data augmentation",
    "F6": "Cross-validation, ensembles and search",
    "G1": "Convolutions",
    "G2": "Pooling and the dense head",
    "G3": "Feature maps and receptive fields",
    "G4": "CNN vs MLP",
    "G5": "Classic CNN architectures",
    "G6": "Transfer learning",
    "G7": "Evaluation metrics",
    "G8": "Distillation and quantisation",
    "H1": "Recurrent nets and backprop through time",
    "H2": "Gradients through time",
    "H3": "LSTM and GRU gates",
    "H4": "Bidirectional and variable-length sequences",
    "H5": "Seq2seq and attention",
    "H6": "Language models and embeddings",
}


def concept_title(concept_id: str) -> str:
    return f"{concept_id} · {CONCEPTS.get(concept_id, concept_id)}"
