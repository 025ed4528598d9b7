"""A labelled retrieval fixture: 200+ dataset descriptions and 30+ task prompts with their answer.

Hand-written descriptions of distinct tasks, plus families of near-miss variants (the same task
type in other languages or domains) so that a retriever must read the details, not the task type
alone. Each prompt names the one dataset that fits it best.
"""

from __future__ import annotations

from p2m.tasks.retrieval.registry import DatasetRecord

DISTINCT = {
    "number_words": "English numbers written in words paired with their value in digits.",
    "celsius_fahrenheit": "Temperatures in degrees Celsius with the same temperature in Fahrenheit.",
    "imdb_sentiment": "Movie reviews from IMDb labelled positive or negative sentiment.",
    "support_tickets": "Customer support tickets classified as billing, bug report or feature request.",
    "squad_qa": "Reading comprehension: questions about Wikipedia paragraphs with answer spans.",
    "spam_sms": "SMS text messages labelled spam or ham.",
    "news_topics": "News headlines classified into world, sports, business and science topics.",
    "cnn_summaries": "News articles paired with short multi-sentence highlights for summarization.",
    "code_docstrings": "Python functions paired with their docstrings describing what the code does.",
    "sql_questions": "Natural language questions over database tables paired with SQL queries.",
    "math_word_problems": "Grade school math word problems with step by step solutions and a final numeric answer.",
    "date_normalization": "Temporal expressions like 'next Friday' or 'March 3rd' normalized to ISO dates.",
    "ner_people_places": "Sentences with named entities tagged: persons, locations, organizations.",
    "grammar_correction": "Sentences with grammatical errors paired with corrected English sentences.",
    "paraphrase_pairs": "Pairs of questions labelled whether they are paraphrases of each other.",
    "toxic_comments": "Online comments labelled toxic, insult, threat or clean.",
    "recipe_ingredients": "Cooking recipes with their list of ingredients extracted.",
    "product_titles": "E-commerce product titles mapped to product categories.",
    "emoji_prediction": "Tweets paired with the emoji the author used.",
    "medical_questions": "Consumer health questions paired with answers from medical professionals.",
    "legal_clauses": "Contract clauses classified by type: termination, liability, confidentiality.",
    "address_parsing": "Postal addresses split into street, city, postcode and country fields.",
    "unit_conversion": (
        "Quantities converted between units: kilometres to miles, kilograms to pounds, litres to gallons."
    ),
    "roman_numerals": "Roman numerals paired with their Arabic number values.",
    "currency_amounts": "Amounts of money written in words converted to numeric currency values.",
    "title_case": "Sentences converted to title case headlines.",
    "email_subject": "Email bodies paired with a short subject line.",
    "question_generation": "Paragraphs paired with questions that can be answered from them.",
    "intent_banking": "Banking app user utterances labelled with one of 77 intents like card lost or transfer failed.",
    "language_id": "Sentences labelled with the language they are written in.",
    "commonsense_choices": "Everyday situations with multiple choice questions about what happens next.",
    "fact_verification": "Claims labelled supported, refuted or not enough info against Wikipedia evidence.",
    "dialogue_acts": "Utterances from conversations tagged with dialogue acts such as question, greeting, statement.",
    "keyword_extraction": "Scientific abstracts paired with their author keywords.",
    "haiku_poems": "Short nature themed haiku poems written in English.",
    "sarcasm_headlines": "News headlines labelled sarcastic or not sarcastic.",
}

LANGS = [
    "French",
    "German",
    "Spanish",
    "Japanese",
    "Chinese",
    "Arabic",
    "Hindi",
    "Portuguese",
    "Russian",
    "Italian",
    "Korean",
    "Dutch",
    "Turkish",
    "Swedish",
]
VARIANTS = {
    "translation_{l}": "Parallel sentences translating English into {L} for machine translation.",
    "sentiment_{l}": "Product reviews written in {L} labelled with positive or negative sentiment.",
    "qa_{l}": "Question answering over Wikipedia articles written in {L}.",
    "summaries_{l}": "News articles in {L} paired with one sentence summaries.",
    "ner_{l}": "{L} sentences annotated with named entities.",
    "numbers_{l}": "Numbers written out in {L} words paired with their digits.",
    "paraphrase_{l}": "Pairs of {L} sentences labelled as paraphrases or not.",
    "spam_{l}": "{L} emails labelled spam or not spam.",
    "dialogue_{l}": "Open-domain chit-chat dialogues in {L}.",
}
DOMAINS = ["hotel", "restaurant", "airline", "laptop", "phone", "book", "game", "car", "clothing", "music"]
DOMAIN_VARIANTS = {
    "{d}_reviews_rating": "{D} reviews paired with a star rating from one to five.",
    "{d}_faq": "Frequently asked questions about {d} services with their answers.",
    "{d}_complaints": "Customer complaints about {d} purchases classified by issue type.",
    "{d}_recommendations": "User histories and the next {d} they chose, for recommendation.",
    "{d}_descriptions": "Short marketing descriptions written for {d} listings.",
}

# (prompt, the dataset that fits best)
PROMPTS = [
    ("Convert the number written in English words to digits. Input: forty-two Output: 42", "number_words"),
    ("Turn Celsius temperatures into Fahrenheit.", "celsius_fahrenheit"),
    ("Is this movie review positive or negative?", "imdb_sentiment"),
    ("Classify the support ticket as billing, bug, or feature request.", "support_tickets"),
    ("Answer the question using the given Wikipedia paragraph; copy the answer span.", "squad_qa"),
    ("Decide whether this SMS message is spam.", "spam_sms"),
    ("Which topic is this news headline about: world, sports, business or science?", "news_topics"),
    ("Summarize the news article in three highlights.", "cnn_summaries"),
    ("Write a docstring for this Python function.", "code_docstrings"),
    ("Write the SQL query that answers the question about the table.", "sql_questions"),
    ("Solve the math word problem and give the final number.", "math_word_problems"),
    ("Normalize the time expression to an ISO date, e.g. 'next Friday' -> 2024-03-08.", "date_normalization"),
    ("Find the people, places and organizations mentioned in the sentence.", "ner_people_places"),
    ("Fix the grammar mistakes in this English sentence.", "grammar_correction"),
    ("Are these two questions asking the same thing?", "paraphrase_pairs"),
    ("Is this online comment toxic?", "toxic_comments"),
    ("List the ingredients needed for this recipe.", "recipe_ingredients"),
    ("Which category does this product title belong to?", "product_titles"),
    ("Predict the emoji for this tweet.", "emoji_prediction"),
    ("Answer this consumer health question as a doctor would.", "medical_questions"),
    ("What type of contract clause is this: termination, liability or confidentiality?", "legal_clauses"),
    ("Split the postal address into street, city, postcode and country.", "address_parsing"),
    ("Convert kilometres to miles.", "unit_conversion"),
    ("Convert the Roman numeral to a number.", "roman_numerals"),
    ("Write the amount of money given in words as a number with currency.", "currency_amounts"),
    ("Write a subject line for this email.", "email_subject"),
    ("Which banking intent does this app message express, e.g. card lost?", "intent_banking"),
    ("Which language is this sentence written in?", "language_id"),
    ("Is the claim supported or refuted by Wikipedia?", "fact_verification"),
    ("Extract keywords from this scientific abstract.", "keyword_extraction"),
    ("Is this headline sarcastic?", "sarcasm_headlines"),
    ("Translate the English sentence into German.", "translation_german"),
    ("Translate this text from English to Japanese.", "translation_japanese"),
    ("Is this Spanish product review positive or negative?", "sentiment_spanish"),
    ("Convert numbers written in French words to digits.", "numbers_french"),
    ("Rate this hotel review from one to five stars.", "hotel_reviews_rating"),
    ("Classify the complaint about an airline purchase by issue type.", "airline_complaints"),
]


def fixture_records() -> list[DatasetRecord]:
    """The dataset descriptions, as records the retrievers take (no data files: ranking only)."""
    entries = dict(DISTINCT)
    for lang in LANGS:
        for name, text in VARIANTS.items():
            entries[name.format(l=lang.lower())] = text.format(L=lang)
    for domain in DOMAINS:
        for name, text in DOMAIN_VARIANTS.items():
            entries[name.format(d=domain)] = text.format(d=domain, D=domain.capitalize())
    return [
        DatasetRecord(name=n, path=f"fixture:{n}", description=f"{n.replace('_', ' ')}. {t}")
        for n, t in entries.items()
    ]
