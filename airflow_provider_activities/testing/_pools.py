"""Fixed pools the synthetic data draws from: people, accounts, opportunities, leads.

Everything here is built once per sandbox from its seed with :class:`random.Random`, so two
sandboxes with the same seed hold the same pools. Names include non-ASCII letters on purpose.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass

FIRST_NAMES: tuple[str, ...] = (
    "Ana", "Ben", "Chloé", "Dmitri", "Émile", "Fatima", "Grace", "Håkon", "Ingrid", "José",
    "Kenji", "Łukasz", "María", "Noah", "Olivia", "Priya", "Quentin", "Renée", "Søren", "Tomás",
    "Uma", "Vũ", "Wei", "Xavier", "Yusuf", "Zoë", "Amélie", "Björn", "Carlos", "Dana",
    "Андрей", "美咲", "Ola", "Sean", "Mia", "Liam", "Jürgen", "Çağla", "Nikos", "Aoife",
)
LAST_NAMES: tuple[str, ...] = (
    "Smith", "Müller", "García", "Nguyễn", "O'Brien", "Kowalski", "Johansson", "Rossi", "Dubois",
    "Tanaka", "Okafor", "Patel", "Silva", "Novák", "Fernández", "Ødegaard", "Brown", "Lee",
    "Schröder", "Wang", "Иванов", "佐藤", "Kim", "Martin", "Yılmaz", "Ali", "Costa", "Hughes",
)
COMPANY_WORDS: tuple[str, ...] = (
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Wonka", "Stark", "Wayne",
    "Nordström", "Café Société", "Zürich Re", "Ångström", "Señor Systems", "Kyōto Labs",
    "Oceanic", "Cyberdyne", "Soylent", "Tyrell", "Aperture", "Black Mesa", "Massive Dynamic",
)
COMPANY_SUFFIXES: tuple[str, ...] = ("Inc.", "GmbH", "SA", "Ltd", "AB", "LLC", "KK", "S.L.", "Group", "Corp.")
JOB_TITLES: tuple[str, ...] = (
    "Account Executive", "Sales Development Representative", "VP of Sales", "Chief Technology Officer",
    "Head of Procurement", "Software Engineer", "Director of Marketing", "Customer Success Manager",
    "Chief Financial Officer", "IT Manager", "Operations Analyst", "General Counsel", "Directeur Général",
    "Geschäftsführerin", "Product Manager", "Solutions Engineer",
)
SENIORITIES: tuple[str | None, ...] = (
    "Executive", "VP", "Director", "Manager", "Individual Contributor", "Individual Contributor", None,
)
DEPARTMENTS: tuple[str | None, ...] = (
    "Sales", "Engineering", "Marketing", "Finance", "IT", "Operations", "Legal", "Human Resources",
    "Customer Success", None,
)
STAGES: tuple[str, ...] = (
    "Prospecting", "Qualification", "Needs Analysis", "Proposal/Price Quote", "Negotiation/Review",
    "Closed Won", "Closed Lost",
)
UNICODE_CRM_WORDS: tuple[str, ...] = ("münchen", "søndag", "東京", "ñandú", "Ωmega", "café")
SELLER_DOMAIN = "sandbox-seller.example"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BYTE_TO_BASE62 = bytes(ord(_BASE62[b % 62]) for b in range(256))


def crm_id(rng: random.Random, prefix: str) -> str:
    """A Salesforce-style 18-character id: a 3-character object prefix and 15 base62 characters.

    :param rng: the random source.
    :param prefix: the object's 3-character prefix (``003`` contact, ``00Q`` lead ...).
    """
    return prefix + rng.randbytes(15).translate(_BYTE_TO_BASE62).decode("ascii")


def ascii_slug(text: str) -> str:
    """Lower-case ASCII letters and digits of ``text`` (accents folded, other scripts dropped).

    :param text: a name, in any script.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def phone_number(rng: random.Random) -> str:
    """A fictional phone number (US 555-01xx or a European format).

    :param rng: the random source.
    """
    if rng.random() < 0.6:
        return f"+1 {rng.randint(201, 989)} 555 01{rng.randint(0, 99):02d}"
    return f"+{rng.choice((33, 44, 49, 46, 34))} {rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"


@dataclass(frozen=True)
class Person:
    """A participant candidate.

    :param id: the backstory participant id (``None`` for people known only by e-mail).
    :param user_id: the backstory user id, for internal team members only.
    :param name: the full name (``None`` when only the e-mail is known).
    :param email: the e-mail address.
    :param job_title: the job title, if known.
    :param phone_number: the phone number, if known.
    :param seniority: the seniority, if known.
    :param department: the department, if known.
    :param external: not a member of the customer's team.
    """

    id: int | None
    user_id: int | None
    name: str | None
    email: str
    job_title: str | None
    phone_number: str | None
    seniority: str | None
    department: str | None
    external: bool


@dataclass(frozen=True)
class Opportunity:
    """An opportunity of an account.

    :param id: its backstory id.
    :param crm_id: its Salesforce-style id.
    :param stage: its sales stage.
    """

    id: int
    crm_id: str
    stage: str


@dataclass(frozen=True)
class Account:
    """A customer account, its contacts and its opportunities.

    :param id: its backstory id.
    :param crm_id: its Salesforce-style id.
    :param name: the company's name.
    :param domain: its e-mail domain.
    :param contacts: the people known there.
    :param opportunities: its opportunities.
    """

    id: int
    crm_id: str
    name: str
    domain: str
    contacts: tuple[Person, ...]
    opportunities: tuple[Opportunity, ...]


@dataclass(frozen=True)
class Lead:
    """A lead (not yet an account): its ids and the person behind it.

    :param id: its backstory id.
    :param crm_id: its Salesforce-style id.
    :param person: the person.
    """

    id: int
    crm_id: str
    person: Person


@dataclass(frozen=True)
class Pools:
    """Everything activities draw from.

    :param users: the customer's team members.
    :param accounts: the customer's accounts.
    :param leads: the customer's leads.
    """

    users: tuple[Person, ...]
    accounts: tuple[Account, ...]
    leads: tuple[Lead, ...]


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _email(name: str, domain: str, number: int) -> str:
    parts = [ascii_slug(part) for part in name.split()]
    parts = [part for part in parts if part]
    local = ".".join(parts) if len(parts) == 2 else f"person{number}"
    return f"{local}{number % 97}@{domain}"


def _person(rng: random.Random, person_id: int | None, user_id: int | None, domain: str, external: bool) -> Person:
    name = _name(rng)
    return Person(
        id=person_id,
        user_id=user_id,
        name=name,
        email=_email(name, domain, person_id or rng.randint(1, 10_000)),
        job_title=rng.choice(JOB_TITLES) if rng.random() < 0.85 else None,
        phone_number=phone_number(rng) if rng.random() < 0.5 else None,
        seniority=rng.choice(SENIORITIES),
        department=rng.choice(DEPARTMENTS),
        external=external,
    )


def build_pools(seed: int, users: int = 60, accounts: int = 300, contacts_per_account: int = 12, leads: int = 400) -> Pools:
    """The pools of one sandbox, a pure function of ``seed``.

    :param seed: the data seed.
    :param users: how many team members.
    :param accounts: how many accounts.
    :param contacts_per_account: how many contacts each account has.
    :param leads: how many leads.
    """
    rng = random.Random(f"peopleai-sandbox-pools:{seed}")
    user_ids = rng.sample(range(10_000, 99_999), users)
    person_ids = iter(rng.sample(range(1_000_000, 9_999_999), users + accounts * contacts_per_account + leads))
    team = tuple(_person(rng, next(person_ids), user_id, SELLER_DOMAIN, False) for user_id in user_ids)
    account_ids = rng.sample(range(100_000, 999_999), accounts)
    opportunity_ids = iter(rng.sample(range(1_000_000, 9_999_999), accounts * 4))
    account_list = []
    for account_id in account_ids:
        name = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)}"
        domain = f"{ascii_slug(name) or 'company'}{account_id % 1000}.example"
        contacts = tuple(_person(rng, next(person_ids), None, domain, True) for _ in range(contacts_per_account))
        opportunities = tuple(
            Opportunity(id=next(opportunity_ids), crm_id=crm_id(rng, "006"), stage=rng.choice(STAGES))
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4)))
        )
        account_list.append(
            Account(
                id=account_id,
                crm_id=crm_id(rng, "001"),
                name=name,
                domain=domain,
                contacts=contacts,
                opportunities=opportunities,
            )
        )
    lead_ids = rng.sample(range(100_000, 999_999), leads)
    lead_list = []
    for lead_id in lead_ids:
        domain = f"{ascii_slug(rng.choice(COMPANY_WORDS))}-prospect{lead_id % 100}.example"
        lead_list.append(Lead(id=lead_id, crm_id=crm_id(rng, "00Q"), person=_person(rng, next(person_ids), None, domain, True)))
    return Pools(users=team, accounts=tuple(account_list), leads=tuple(lead_list))
