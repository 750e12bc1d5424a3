import numpy as np
import pytest

from matcher.attributes import (
    attribute_scores,
    parse_attributes,
    predicted_names,
    rank_by_attributes,
    rescore,
    term_names,
    term_probabilities,
)

NAMES = ("personalMale", "carryingBackpack", "upperBodyRed")
COMPLEMENTS = {"personalFemale": "personalMale"}


def test_parse_with_complement_and_unknown() -> None:
    terms = parse_attributes("personalFemale, carryingBackpack", NAMES, COMPLEMENTS)
    assert terms == [(0, False), (1, True)]
    with pytest.raises(ValueError, match="unknown attribute 'hat'"):
        parse_attributes("hat", NAMES, COMPLEMENTS)
    with pytest.raises(ValueError, match="no attribute"):
        parse_attributes(" , ", NAMES, COMPLEMENTS)


def test_ranking_prefers_images_with_all_attributes() -> None:
    probs = np.array([[0.9, 0.9, 0.1],   # male with backpack
                      [0.1, 0.8, 0.2],   # female with backpack: the match
                      [0.2, 0.1, 0.9],   # female, no backpack
                      [0.5, 0.5, 0.5]])
    terms = parse_attributes("personalFemale,carryingBackpack", NAMES, COMPLEMENTS)
    ranked = rank_by_attributes(np.array([10, 11, 12, 13]), probs, terms, top_k=3)
    assert [i for i, _ in ranked] == [11, 13, 10]  # 10: -1.20, 12: -1.26
    assert ranked[0][1] == pytest.approx((np.log(0.9) + np.log(0.8)) / 2)


def test_rescore_can_overturn_a_close_image_ranking() -> None:
    probs = np.array([[0.1, 0.1, 0.1], [0.9, 0.9, 0.9]])
    terms = parse_attributes("upperBodyRed", NAMES, COMPLEMENTS)
    final = rescore(np.array([0.51, 0.50]), probs, terms)
    assert final[1] > final[0]
    assert predicted_names(np.array([0.2, 0.7, 0.9]), NAMES) == ["upperBodyRed", "carryingBackpack"]


def test_plain_words_any_case_and_spacing() -> None:
    words = {"female": "personalFemale", "backpack": "carryingBackpack", "red top": "upperBodyRed",
             "hat": "accessoryHat"}  # a word for an attribute the model lacks is not offered
    terms = parse_attributes("Female,  backpack , RED   top, upperbodyred", NAMES, COMPLEMENTS, words)
    assert terms == [(0, False), (1, True), (2, True), (2, True)]
    with pytest.raises(ValueError, match="unknown attribute 'hat'.*or the words: backpack, female, red top$"):
        parse_attributes("female, hat", NAMES, COMPLEMENTS, words)


def test_why_it_matched() -> None:
    terms = parse_attributes("personalFemale,upperBodyRed", NAMES, COMPLEMENTS)
    assert term_names(terms, NAMES, COMPLEMENTS) == ["personalFemale", "upperBodyRed"]
    p = term_probabilities(np.array([[0.9, 0.5, 0.2], [0.25, 0.5, 0.75]]), terms)
    np.testing.assert_allclose(p, [[0.1, 0.2], [0.75, 0.75]])
    # the attribute score is the mean log of exactly these probabilities
    probs = np.array([[0.9, 0.5, 0.2], [0.25, 0.5, 0.75]])
    np.testing.assert_allclose(attribute_scores(probs, terms), np.log(p).mean(axis=1))
