"""How the teacher's data is made, beyond one stage's loop: classification data (labels defined,
inputs written per label and labelled back cold) and the report every way of generating fills.
Imports the core, storage and the teacher.
"""
