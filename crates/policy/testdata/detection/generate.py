"""Generates the content-inspection corpus: labelled positives and a clean corpus.

    python crates/policy/testdata/detection/generate.py   (needs `pip install faker`)

Writes, next to this file:
  positives.jsonl  documents with personal data and markings, each entity's kind and byte span
  clean.jsonl      ordinary administrative prose full of numbers, dates and codes, including
                   look-alikes that fail the checksums; a detector must find nothing here

Seeded, so the output is the same on every run. crates/policy/tests/detection.rs reads both and
prints precision and recall per kind.
"""

import json
import pathlib
import random

from faker import Faker

HERE = pathlib.Path(__file__).parent
SEED = 20261122
rng = random.Random(SEED)
Faker.seed(SEED)
de = Faker("de_DE")
us = Faker("en_US")

# ---------- identifiers with checksums, generated here because faker has none for them ----------

DOC_ALPHABET = "CFGHJKLMNPRTVWXYZ0123456789"


def check_731(s):
    def value(c):
        return int(c) if c.isdigit() else ord(c) - ord("A") + 10

    return str(sum(value(c) * (7, 3, 1)[i % 3] for i, c in enumerate(s)) % 10)


def document_number(first_letters):
    while True:
        body = rng.choice(first_letters) + "".join(rng.choice(DOC_ALPHABET) for _ in range(8))
        if any(c.isdigit() for c in body):
            return body


def tax_id():
    """Steuerliche Identifikationsnummer: one digit of the first ten twice, ISO 7064 MOD 11,10."""
    while True:
        digits = rng.sample(range(10), 9)
        if digits[0] == 0:
            continue
        digits.insert(rng.randrange(1, 10), rng.choice(digits))
        product = 10
        for d in digits:
            s = (d + product) % 10 or 10
            product = (s * 2) % 11
        check = (11 - product) % 10
        return "".join(map(str, digits)) + str(check)


def tax_id_valid(s):
    d = [int(c) for c in s if c.isdigit()]
    if len(d) != 11 or d[0] == 0:
        return False
    counts = [d[:10].count(i) for i in range(10)]
    if sum(1 for c in counts if c >= 2) != 1 or max(counts) > 3:
        return False
    product = 10
    for x in d[:10]:
        s_ = (x + product) % 10 or 10
        product = (s_ * 2) % 11
    return (11 - product) % 10 == d[10]


def luhn_ok(number):
    total = 0
    for i, c in enumerate(reversed(number)):
        x = int(c)
        if i % 2 == 1:
            x *= 2
            if x > 9:
                x -= 9
        total += x
    return total % 10 == 0


def iban_ok(iban):
    s = iban.replace(" ", "")
    r = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in r)) % 97 == 1


def group4(s):
    return " ".join(s[i : i + 4] for i in range(0, len(s), 4))


# ---------- entity makers: (kind, text) ----------


def email():
    return "email", rng.choice([de, us]).email()


def phone():
    return "phone", rng.choice([de, de, us]).phone_number()


def iban():
    raw = rng.choice([de, de, us]).iban()
    return "iban", group4(raw) if rng.random() < 0.6 else raw


def card():
    raw = us.credit_card_number()
    if rng.random() < 0.4 and len(raw) == 16:
        raw = group4(raw)
    return "payment_card", raw


def ssn():
    return "us_ssn", us.ssn()


def de_tax():
    t = tax_id()
    if rng.random() < 0.4:
        t = f"{t[:2]} {t[2:5]} {t[5:8]} {t[8:]}"
    return "de_tax_id", t


def id_card():
    n = document_number("LMNPRTVWXY")
    return "de_id_card", n + check_731(n) if rng.random() < 0.5 else n


def passport():
    n = document_number("CFGHJK")
    return "de_passport", n + check_731(n) if rng.random() < 0.5 else n


def ip():
    return "ip_address", us.ipv4() if rng.random() < 0.7 else us.ipv6()


# Markings of the US scheme, as written in documents.
US_PORTIONS = ["(U)", "(C)", "(S)", "(TS)", "(S//NF)", "(TS//SI)", "(TS//SI//REL TO USA, AUS)",
               "(S//REL TO USA, GBR)", "(C//NF)", "(TS//SI/TK//NOFORN)", "(S//ORCON/NF)", "(CUI)"]
US_BANNERS = ["SECRET//NOFORN", "TOP SECRET//SI//REL TO USA, GBR", "TOP SECRET//SI/TK//NOFORN",
              "SECRET//REL TO USA, AUS, GBR", "CONFIDENTIAL//NOFORN", "TOP SECRET//HCS//ORCON/NOFORN"]
US_LINES = ["SECRET", "TOP SECRET", "CONFIDENTIAL"]


def marking():
    r = rng.random()
    if r < 0.5:
        return "marking", rng.choice(US_PORTIONS)
    if r < 0.85:
        return "marking", rng.choice(US_BANNERS)
    return "marking", rng.choice(US_LINES)


MAKERS = [email, phone, iban, card, ssn, de_tax, id_card, passport, ip, marking]

# Context words for documents: ID numbers without a check digit are named in the text.
CONTEXT = {
    "email": ["E-Mail: ", "Contact: ", "please write to ", "Rückfragen an "],
    "phone": ["Tel. ", "Telefon: ", "Phone: ", "call ", "erreichbar unter "],
    "iban": ["IBAN ", "IBAN: ", "Bankverbindung: ", "account "],
    "payment_card": ["card number ", "Kreditkarte ", "paid with card ", "Karte Nr. "],
    "us_ssn": ["SSN ", "Social Security number ", "SSN: "],
    "de_tax_id": ["Steuer-ID ", "Steueridentifikationsnummer: ", "IdNr. ", "tax id "],
    "de_id_card": ["Personalausweis ", "Ausweisnummer: ", "ID card no. ", "Personalausweis-Nr. "],
    "de_passport": ["Reisepass ", "Passnummer: ", "passport no. ", "Reisepass Nr. "],
    "ip_address": ["from host ", "IP ", "Quell-IP: ", "source address "],
}

DE_SENTENCES = [
    "Der Antrag von {name} vom {date} wurde unter dem Aktenzeichen {az} erfasst.",
    "Die Zahlung über {amount} EUR ist bis zum {date} fällig.",
    "Bitte beachten Sie die Frist gemäß § {para} Abs. {n} VwVfG.",
    "Die Sitzung findet am {date} um {time} Uhr in Raum {room} statt.",
    "{name} wohnt in der {street}, {postcode} {city}.",
    "Der Bescheid Nr. {ref} wurde am {date} zugestellt.",
]
EN_SENTENCES = [
    "The request from {name} dated {date} was logged as case {ref}.",
    "Payment of ${amount} is due by {date}.",
    "The committee meets on {date} at {time} in room {room}.",
    "{name} lives at {street}, {city}.",
    "See section {para}.{n} of the handbook, revision {rev}.",
    "Order {ref} shipped on {date} in {n} parcels.",
]


def filler(lang):
    f = de if lang == "de" else us
    template = rng.choice(DE_SENTENCES if lang == "de" else EN_SENTENCES)
    return template.format(
        name=f.name(),
        date=f.date(pattern="%d.%m.%Y" if lang == "de" else "%B %d, %Y"),
        az=f"{rng.randint(1, 9)} {rng.choice('ABCKLOS')} {rng.randint(10, 999)}/{rng.randint(18, 26)}",
        amount=f"{rng.randint(10, 99999):,}.{rng.randint(0, 99):02d}",
        para=rng.randint(1, 120),
        n=rng.randint(1, 9),
        time=f"{rng.randint(7, 18)}:{rng.choice(['00', '15', '30', '45'])}",
        room=f"{rng.choice('ABC')}{rng.randint(100, 450)}",
        street=f.street_address(),
        postcode=f.postcode(),
        city=f.city(),
        ref=f"{rng.choice(['RE', 'BV', 'AZ', 'PO'])}-{rng.randint(2019, 2026)}-{rng.randint(1, 99999):05d}",
        rev=f"{rng.randint(1, 9)}.{rng.randint(0, 20)}",
    )


def positive_doc():
    lang = rng.choice(["de", "en"])
    parts = [filler(lang)]
    entities = []
    for _ in range(rng.randint(1, 3)):
        kind, text = rng.choice(MAKERS)()
        if kind == "marking":
            if text.startswith("("):
                parts.append(text + " " + filler(lang))
                at = 0
            elif "//" in text or rng.random() < 0.5:
                parts.append("\n" + text + "\n")
                at = 1
            else:
                parts.append("\n" + text + "\n")
                at = 1
            entities.append((len(parts) - 1, at, kind, text))
            continue
        prefix = rng.choice(CONTEXT[kind])
        parts.append(prefix + text + ".")
        entities.append((len(parts) - 1, len(prefix), kind, text))
        parts.append(filler(lang))
    # Join with spaces, computing byte spans.
    doc = ""
    spans = []
    for i, part in enumerate(parts):
        if doc and not part.startswith("\n") and not doc.endswith("\n"):
            doc += " "
        start = len(doc.encode())
        doc += part
        for idx, at, kind, text in entities:
            if idx == i:
                s = start + len(part[:at].encode())
                spans.append({"kind": kind, "start": s, "end": s + len(text.encode())})
    return {"text": doc, "entities": spans}


# ---------- the clean corpus: look-alikes that fail every check ----------


def broken_iban():
    while True:
        raw = de.iban()
        bad = raw[:2] + f"{(int(raw[2:4]) + rng.randint(1, 50)) % 100:02d}" + raw[4:]
        if not iban_ok(bad):
            return group4(bad) if rng.random() < 0.5 else bad


def broken_card():
    while True:
        n = "4" + "".join(rng.choice("0123456789") for _ in range(15))
        if not luhn_ok(n):
            return group4(n) if rng.random() < 0.5 else n


def broken_tax():
    while True:
        t = str(rng.randint(10**10, 10**11 - 1))
        if not tax_id_valid(t):
            return t


def look_alike():
    choices = [
        lambda: f"Referenz {broken_iban()}",
        lambda: f"Vorgangsnummer {broken_card()}",
        lambda: f"Kundennummer {broken_tax()}",
        lambda: f"Produktcode {document_number('LMNPRTVWXY')}",
        lambda: f"Artikel {document_number('CFGHJK')}",
        lambda: f"version {rng.randint(1, 12)}.{rng.randint(0, 40)}.{rng.randint(0, 9)}",
        lambda: f"Stand {rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(2019, 2026)}",
        lambda: f"Zeitraum {rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} bis {rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        lambda: f"um {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        lambda: f"Betrag {rng.randint(1, 999)}.{rng.randint(0, 999):03d},{rng.randint(0, 99):02d} EUR",
        lambda: f"Anlage ({rng.choice('abcdef')}) und ({rng.randint(1, 9)})",
        lambda: f"gemäß Art. {rng.randint(1, 99)} ({rng.randint(1, 5)}) DSGVO",
        lambda: f"the applicant(s) in the USA (see annex {rng.choice('ABC')})",
        lambda: f"a secret ballot, {rng.randint(2, 40)} votes in favour",
        lambda: f"order no. {rng.randint(10**5, 10**7)}",
        lambda: f"Postleitzahl {de.postcode()}",
        lambda: f"Az. {rng.randint(1, 9)} O {rng.randint(10, 999)}/{rng.randint(18, 26)}",
        lambda: f"Drucksache {rng.randint(18, 21)}/{rng.randint(1000, 9999)}",
        lambda: f"EU-Verordnung {rng.randint(2000, 2025)}/{rng.randint(100, 2500)}",
        lambda: f"Tabelle {rng.randint(1, 9)}.{rng.randint(1, 9)}.{rng.randint(1, 9)}",
        lambda: f"Konfidenzintervall {rng.randint(90, 99)} %",
        lambda: f"Vorgang {rng.randint(2, 9)}{rng.randint(10, 99)}{rng.randint(2, 9)}{rng.randint(10**5, 10**6 - 1)}",
        lambda: f"Gliederungspunkt {rng.randint(1, 9)}.{rng.randint(1, 9)}.{rng.randint(256, 999)}.{rng.randint(1, 9)}",
        lambda: f"Sendung {rng.choice(['JJD', 'RR', 'CX'])}{rng.randint(10**8, 10**9 - 1)}DE",
        lambda: f"Ticket #{rng.randint(1000, 99999)} vom {rng.randint(1, 28)}.{rng.randint(1, 12)}.",
    ]
    return rng.choice(choices)()


def clean_doc():
    lang = rng.choice(["de", "en"])
    parts = []
    for _ in range(rng.randint(2, 5)):
        parts.append(filler(lang))
        if rng.random() < 0.7:
            parts.append(look_alike() + ".")
    return {"text": " ".join(parts), "entities": []}


def main():
    with open(HERE / "positives.jsonl", "w", encoding="utf-8") as f:
        for _ in range(3000):
            f.write(json.dumps(positive_doc(), ensure_ascii=False) + "\n")
    with open(HERE / "clean.jsonl", "w", encoding="utf-8") as f:
        for _ in range(3000):
            f.write(json.dumps(clean_doc(), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
