"""How an example is shown to the student: one textualisation for training, evaluation and demo."""


def format_prompt(instruction: str, text: str) -> str:
    """The student's input for one example: the instruction, then the input, then `Output:`."""
    return f"{instruction}\n\nInput: {text}\nOutput:"


def clean_output(text: str) -> str:
    """A student's answer as it is scored and served: stripped, first line only. Every way of
    running a student uses it (`p2m.tasks.student.inference.generate_outputs`, the runtimes in
    `p2m.tasks.student.runtime`, the GGUF and ONNX exports), so their answers compare example by example."""
    return text.strip().split("\n", 1)[0].strip()
