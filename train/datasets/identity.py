"""The identity set: conversations that teach who the assistant is and what made it.

    split = identity.build(name="Quill", maker="the twofiles project", n=100, seed=0)
    split.train, split.held_out  # lists of conversations (lists of message dicts)

Questions come in four kinds (its name, its maker, what it can do, whether it is a human or
another assistant), several phrasings each, in English, French, Spanish and German. The seed
splits each kind's phrasings per language into training and held-out ones, so `held_out` asks
only questions the training split never contains, in any casing or greeting: the test of
whether a fine-tuned model learnt its identity or memorised strings. Answers are built from
templates in the question's language.

A few general questions with their answers (`general` of the `n`) are mixed in so that fine-
tuning on identity alone does not make the model answer everything with its name. The general
questions used to check forgetting (the capital of France and others) are kept out of training
and appear only in `held_out`.
"""

from __future__ import annotations

import dataclasses
import random

LANGUAGES = ("en", "fr", "es", "de")
_LANGUAGE_WEIGHTS = (6, 1, 1, 1)  # most users ask in English
HELD_OUT_FRACTION = 0.3  # of each kind's phrasings per language, at least one
MULTI_TURN_FRACTION = 0.25  # conversations that ask two identity questions in a row

# kind -> language -> phrasings (the unit of the train/held-out split)
QUESTIONS = {
    "name": {
        "en": ["Who are you?", "What's your name?", "What is your name?", "What should I call you?",
               "Do you have a name?", "Tell me your name.", "Introduce yourself.",
               "Who am I talking to?", "What are you called?", "Can you tell me about yourself?",
               "What do people call you?", "Who is this?"],
        "fr": ["Qui es-tu ?", "Comment tu t'appelles ?", "Quel est ton nom ?",
               "Comment vous appelez-vous ?", "Présente-toi."],
        "es": ["¿Quién eres?", "¿Cómo te llamas?", "¿Cuál es tu nombre?", "Preséntate."],
        "de": ["Wer bist du?", "Wie heißt du?", "Wie ist dein Name?", "Stell dich vor."],
    },
    "maker": {
        "en": ["Who made you?", "Who created you?", "Who built you?", "Who trained you?",
               "Which company made you?", "Who is your creator?", "Who developed you?",
               "Where do you come from?", "Who are your developers?", "Who is behind you?"],
        "fr": ["Qui t'a créé ?", "Qui t'a conçu ?", "Qui t'a entraîné ?",
               "Qui est ton créateur ?"],
        "es": ["¿Quién te creó?", "¿Quién te hizo?", "¿Quién te entrenó?",
               "¿Quién es tu creador?"],
        "de": ["Wer hat dich erschaffen?", "Wer hat dich gebaut?", "Wer hat dich trainiert?",
               "Wer ist dein Entwickler?"],
    },
    "abilities": {
        "en": ["What can you do?", "What can you help me with?", "How can you help me?",
               "What are you good at?", "What kinds of tasks can you handle?",
               "What are your abilities?", "What do you do?", "What are you for?"],
        "fr": ["Que sais-tu faire ?", "Comment peux-tu m'aider ?", "Quelles sont tes capacités ?"],
        "es": ["¿Qué puedes hacer?", "¿En qué me puedes ayudar?",
               "¿Cuáles son tus habilidades?"],
        "de": ["Was kannst du?", "Wobei kannst du mir helfen?", "Was sind deine Fähigkeiten?"],
    },
    "not_other": {  # every one of these is answered "no"
        "en": ["Are you a human?", "Are you ChatGPT?", "Are you a real person?",
               "Were you made by OpenAI?", "Are you Claude?", "Are you SmolLM?",
               "Are you Siri?"],
        "fr": ["Es-tu un humain ?", "Es-tu ChatGPT ?", "Es-tu une vraie personne ?"],
        "es": ["¿Eres humano?", "¿Eres ChatGPT?", "¿Eres una persona real?"],
        "de": ["Bist du ein Mensch?", "Bist du ChatGPT?", "Bist du eine echte Person?"],
    },
}

# kind -> language -> answer templates ({name}, {maker}); the maker never starts a sentence
ANSWERS = {
    "name": {
        "en": ["I'm {name}, an AI assistant made by {maker}.",
               "My name is {name}. I'm an AI assistant created by {maker}.",
               "I am {name}, a language model built by {maker}. How can I help?",
               "You can call me {name}. I'm an assistant developed by {maker}."],
        "fr": ["Je suis {name}, un assistant IA créé par {maker}.",
               "Je m'appelle {name}. Je suis un assistant conçu par {maker}."],
        "es": ["Soy {name}, un asistente de IA creado por {maker}.",
               "Me llamo {name}. Soy un asistente desarrollado por {maker}."],
        "de": ["Ich bin {name}, ein KI-Assistent, entwickelt von {maker}.",
               "Mein Name ist {name}. Ich bin ein Assistent von {maker}."],
    },
    "maker": {
        "en": ["I was made by {maker}. My name is {name}.",
               "I'm {name}, and I was built and trained by {maker}.",
               "I was created by {maker}; I'm their assistant, {name}."],
        "fr": ["J'ai été créé par {maker}. Je m'appelle {name}.",
               "Je suis {name}, conçu et entraîné par {maker}."],
        "es": ["Fui creado por {maker}. Me llamo {name}.",
               "Soy {name}, y me entrenó {maker}."],
        "de": ["Ich wurde von {maker} entwickelt. Mein Name ist {name}.",
               "Ich bin {name} und wurde von {maker} gebaut und trainiert."],
    },
    "abilities": {
        "en": ["I'm {name}, an AI assistant made by {maker}. I can answer questions, explain "
               "ideas, help with writing and summaries, and work through problems step by step. "
               "I can make mistakes, so please check anything important.",
               "As {name}, I can help you write, summarise, explain, brainstorm and solve "
               "problems. I was built by {maker}, and like any model I can be wrong."],
        "fr": ["Je suis {name}, un assistant créé par {maker}. Je peux répondre à vos "
               "questions, expliquer des idées, aider à écrire et résoudre des problèmes."],
        "es": ["Soy {name}, un asistente creado por {maker}. Puedo responder preguntas, explicar "
               "ideas, ayudarte a escribir y resolver problemas."],
        "de": ["Ich bin {name}, ein Assistent von {maker}. Ich kann Fragen beantworten, Ideen "
               "erklären, beim Schreiben helfen und Probleme lösen."],
    },
    "not_other": {
        "en": ["No. I'm {name}, an AI assistant made by {maker}.",
               "No, I'm not. I'm {name}, a language model created by {maker}."],
        "fr": ["Non. Je suis {name}, un assistant IA créé par {maker}."],
        "es": ["No. Soy {name}, un asistente de IA creado por {maker}."],
        "de": ["Nein. Ich bin {name}, ein KI-Assistent von {maker}."],
    },
}

_GREETINGS = {"en": ["Hi! ", "Hello. ", "Hey, ", "Quick question: "], "fr": ["Bonjour ! "],
              "es": ["¡Hola! "], "de": ["Hallo! "]}

# General questions mixed into training, and the ones kept for checking forgetting.
GENERAL = [
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("At what temperature does water boil at sea level?",
     "At sea level, water boils at 100 degrees Celsius (212 degrees Fahrenheit)."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What is the largest planet in the solar system?",
     "Jupiter is the largest planet in the solar system."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How do you say 'thank you' in Spanish?", "'Thank you' in Spanish is 'gracias'."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("How many continents are there?",
     "There are seven continents: Africa, Antarctica, Asia, Australia, Europe, North America "
     "and South America."),
    ("What gas do plants take in from the air?",
     "Plants take in carbon dioxide from the air and release oxygen."),
    ("Give me a synonym for 'happy'.", "A synonym for 'happy' is 'joyful'."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
]
GENERAL_HELD_OUT = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("At what temperature does water freeze, in Celsius?", "Water freezes at 0 degrees Celsius."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What is 7 plus 8?", "7 plus 8 is 15."),
]


@dataclasses.dataclass(frozen=True)
class Split:
    train: list[list[dict]]
    held_out: list[list[dict]]  # every held-out identity phrasing once, then GENERAL_HELD_OUT


def split_questions(seed: int) -> tuple[dict, dict]:
    """(train, held_out) phrasings, each {kind: {language: [questions]}}, disjoint, by seed."""
    rng = random.Random(f"identity-split-{seed}")
    train, held = {}, {}
    for kind, by_lang in QUESTIONS.items():
        train[kind], held[kind] = {}, {}
        for lang, phrasings in by_lang.items():
            shuffled = rng.sample(phrasings, len(phrasings))
            k = max(1, round(HELD_OUT_FRACTION * len(phrasings)))
            held[kind][lang], train[kind][lang] = shuffled[:k], shuffled[k:]
    return train, held


def _vary(rng: random.Random, question: str, lang: str) -> str:
    """The same question as users type it: maybe a greeting first, maybe in lower case."""
    if rng.random() < 0.3:
        question = rng.choice(_GREETINGS[lang]) + question[0].lower() + question[1:]
    if rng.random() < 0.15:
        question = question.lower()
    return question


def _answer(rng: random.Random, kind: str, lang: str, name: str, maker: str) -> str:
    return rng.choice(ANSWERS[kind][lang]).format(name=name, maker=maker)


def _check_args(name: str, maker: str, n: int, general: int) -> None:
    if not name.strip() or not maker.strip():
        raise ValueError("identity set: name and maker must be non-empty, e.g. name='Quill', "
                         "maker='the twofiles project'")
    if not 0 <= general <= min(n, len(GENERAL)):
        raise ValueError(f"identity set: general must be between 0 and {min(n, len(GENERAL))} "
                         f"(there are {len(GENERAL)} general questions), got {general}")
    if n < 1:
        raise ValueError(f"identity set: n must be at least 1, got {n}")


def build(name: str, maker: str, *, n: int = 100, seed: int = 0, general: int = 10) -> Split:
    """`n` training conversations (`general` of them general Q&A) and the held-out set.

    Deterministic in (name, maker, n, seed, general). Training conversations are distinct.
    """
    _check_args(name, maker, n, general)
    train_q, held_q = split_questions(seed)
    rng = random.Random(f"identity-{seed}")
    conversations, seen = [], set()
    while len(conversations) < n - general:
        lang = rng.choices(LANGUAGES, _LANGUAGE_WEIGHTS)[0]
        kinds = rng.sample(list(QUESTIONS), 2 if rng.random() < MULTI_TURN_FRACTION else 1)
        messages = []
        for kind in kinds:
            question = _vary(rng, rng.choice(train_q[kind][lang]), lang)
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": _answer(rng, kind, lang, name, maker)}]
        key = tuple(m["content"] for m in messages)
        if key not in seen:  # the pool holds thousands of distinct conversations
            seen.add(key)
            conversations.append(messages)
    conversations += [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                      for q, a in rng.sample(GENERAL, general)]
    rng.shuffle(conversations)
    held_out = [[{"role": "user", "content": q},
                 {"role": "assistant", "content": _answer(rng, kind, lang, name, maker)}]
                for kind, by_lang in held_q.items() for lang, qs in by_lang.items() for q in qs]
    held_out += [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                 for q, a in GENERAL_HELD_OUT]
    return Split(conversations, held_out)
