"""One rule for "the same example", in generation and in processing."""

from p2m.tasks.core.dedup import SeenInputs, normalise


def test_exact_duplicates_differ_only_in_case_punctuation_and_spaces():
    assert normalise("  Forty-Two! ") == normalise("forty two") == "forty two"
    assert normalise("3.5") != normalise("35")


def test_near_duplicates_are_long_texts_with_the_same_numbers():
    seen = SeenInputs(95, ["forty-two", "The quick brown fox jumps over the lazy dog near the river bank in 2023."])
    assert seen.is_duplicate("Forty-two!")  # exact after normalisation
    assert not seen.is_duplicate("forty-three")  # short and different: a new example
    assert seen.is_duplicate("The quick brown fox jumps over the lazy dog near the river bank in 2023")
    assert not seen.is_duplicate("The quick brown fox jumps over the lazy dog near the river bank in 2024.")
