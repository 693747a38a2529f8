"""torch nn.Modules (architectures) and their frozen config dataclasses."""
