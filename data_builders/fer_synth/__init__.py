"""fer_synth: procedural face-expression sequences, the default data set.

``generator`` makes the frames (numpy + PIL only); ``FerSynth`` is the TFDS
builder over it;
``python -m fer_jax.data_builders.fer_synth.contact_sheet`` draws a
preview.
"""

from fer_jax.data_builders.fer_synth.fer_synth import (FerSynth, FerSynthConfig,
                                               sized_builder)
from fer_jax.data_builders.fer_synth.generator import (
    EXPRESSIONS, SynthSpec, generate_frames, generate_sequence, mean_shape,
    sequence_expression, sequence_landmarks)

__all__ = [
    "EXPRESSIONS", "FerSynth", "FerSynthConfig", "SynthSpec", "generate_frames",
    "generate_sequence", "mean_shape", "sequence_expression",
    "sequence_landmarks", "sized_builder",
]
