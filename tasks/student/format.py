"""How an example is shown to the student: one textualisation for training, evaluation and demo."""


def format_prompt(instruction: str, text: str) -> str:
    """The student's input for one example: the instruction, then the input, then `Output:`."""
    return f"{instruction}\n\nInput: {text}\nOutput:"
