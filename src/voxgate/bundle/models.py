"""Pydantic models of an agent bundle source: agent.yaml, topics, actions, connectors and settings."""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, field_validator, model_validator

SECRET_REF_RE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+|vault:[^#]+#.+)$")
NAME_MAX = 64
NAME_RE = rf"^[a-z][a-z0-9_\-]{{0,{NAME_MAX - 1}}}$"
"""The one pattern for agent and topic names, wherever a name is checked: the spec models, bundle
build, upload and extraction. A name becomes a folder, a column and part of URLs, so it is a plain
identifier, never a path."""
NAME_RULE = f"lowercase letters, digits, '_' and '-', starting with a letter, at most {NAME_MAX} characters"
_NAME = re.compile(NAME_RE)


def is_name(value: object) -> bool:
    """True for a valid agent or topic name (the whole string: a trailing newline does not pass)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


#: the events a conversation records; a bundle's conversation tests may expect them by name
EventType = Literal[
    "session_started",
    "intent",
    "topic_started",
    "topic_ended",
    "digression",
    "slot_filled",
    "slot_failed",
    "digits_partial",
    "digits_assembled",
    "digits_confirmed",
    "verification_started",
    "verification_succeeded",
    "verification_failed",
    "verification_locked",
    "action",
    "knowledge_answer",
    "refused",
    "no_match",
    "abuse",
    "data_access_denied",
    "escalated",
    "session_ended",
    "no_input",
]


class Strict(BaseModel):
    """Base for every bundle model: unknown fields are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


SecretRef = Annotated[
    str,
    Field(
        description="A reference to a secret, never its value: env:NAME, file:PATH or vault:PATH#KEY",
        json_schema_extra={"pattern": SECRET_REF_RE.pattern},
    ),
]


def check_secret_ref(value: str) -> str:
    if not SECRET_REF_RE.match(value):
        raise ValueError("credentials must be references (env:NAME, file:PATH or vault:PATH#KEY), not inline values")
    return value


# --- scope ---------------------------------------------------------------------------------


class Scope(Strict):
    purpose: str = Field(description="What the agent is for, in one or two sentences.")
    refuse: list[str] = Field(
        default_factory=list,
        description="Kinds of request the agent must refuse (also used as negative examples).",
    )
    refuse_examples: list[str] = Field(
        default_factory=list,
        description="Caller sentences the agent must refuse (negative examples for intent recognition).",
    )
    capabilities: str | None = Field(
        default=None, description="How the agent describes what it can do; defaults to topic names."
    )
    refusal_message: str = Field(
        default="Sorry, I can't help with that. I can help with {capabilities}.",
        description="What the agent says when a request is out of scope; {capabilities} lists topics.",
    )


# --- connectors and actions ----------------------------------------------------------------


class DataClassification(str, Enum):
    public = "public"
    internal = "internal"
    confidential = "confidential"
    personal = "personal"


class BearerAuth(Strict):
    type: Literal["bearer"] = "bearer"
    token: SecretRef

    _check = field_validator("token")(classmethod(lambda cls, v: check_secret_ref(v)))


class HeaderAuth(Strict):
    type: Literal["header"] = "header"
    header: str
    value: SecretRef

    _check = field_validator("value")(classmethod(lambda cls, v: check_secret_ref(v)))


class HttpConnector(Strict):
    type: Literal["http"] = "http"
    description: str = ""
    base_url: str = Field(description="Base URL; ${VAR} and ${VAR:-default} are expanded from the environment.")
    hosts: list[str] = Field(min_length=1, description="Every host this connector may talk to (checked on each call).")
    classification: DataClassification = Field(
        description="The most sensitive class of data that flows through this connector."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Static, non-secret headers.")
    auth: BearerAuth | HeaderAuth | None = Field(default=None, discriminator="type")
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=5)


Connector = HttpConnector


class Action(Strict):
    connector: str
    description: str = ""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(
        description="URL path template; {customer_id} is filled from the verified session, "
        "{slots.NAME} from collected slots."
    )
    query: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | None = None
    customer_scoped: bool = Field(
        default=True,
        description="Requires a verified caller; the call may only touch that caller's records.",
    )
    timeout_s: float | None = Field(default=None, gt=0, le=60)
    retries: int | None = Field(default=None, ge=0, le=5)


# --- slots and steps -----------------------------------------------------------------------


class SlotType(str, Enum):
    digits = "digits"
    account_number = "account_number"
    pin = "pin"
    date = "date"
    yes_no = "yes_no"
    money = "money"
    enum = "enum"
    free_text = "free_text"
    phone = "phone"
    postcode = "postcode"


class Slot(Strict):
    type: SlotType
    prompt: str
    reprompt: str | None = None
    max_attempts: int = Field(default=3, ge=1, le=10)
    length: int | None = Field(default=None, ge=1, le=32)
    min_length: int | None = Field(default=None, ge=1, le=32)
    max_length: int | None = Field(default=None, ge=1, le=32)
    values: dict[str, list[str]] | None = Field(
        default=None, description="For enum slots: canonical value -> synonyms."
    )
    sensitive: bool = Field(default=False, description="Never stored or shown in clear.")
    fill_from_trigger: bool | None = Field(
        default=None,
        description="Fill this slot from the utterance that started the topic "
        "(default: yes for typed values such as digits, money and dates; no for free text, yes/no and PINs).",
    )

    @property
    def fills_from_trigger(self) -> bool:
        if self.fill_from_trigger is not None:
            return self.fill_from_trigger
        return self.type not in (SlotType.free_text, SlotType.yes_no, SlotType.pin)

    @model_validator(mode="after")
    def _enum_needs_values(self) -> Slot:
        if self.type == SlotType.enum and not self.values:
            raise ValueError("enum slots need 'values'")
        return self


class SayStep(Strict):
    say: str


class AskStep(Strict):
    ask: str


class CallStep(Strict):
    call: str
    save_as: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    args: dict[str, Any] = Field(default_factory=dict)
    on_not_found: list[Step] = Field(
        default_factory=list, description="Steps when the record does not exist (HTTP 404)."
    )


class Branch(Strict):
    on: str = Field(description="A value path such as order.status or outage.outages|count")
    cases: dict[str, list[Step]] = Field(default_factory=dict)
    default: list[Step] = Field(default_factory=list)

    @field_validator("cases", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        # YAML reads `0:` or `true:` as non-strings; branch values are compared as text.
        if isinstance(value, dict):
            return {str(k).lower() if isinstance(k, bool) else str(k): v for k, v in value.items()}
        return value


class BranchStep(Strict):
    branch: Branch


class Confirm(Strict):
    prompt: str
    on_yes: list[Step]
    on_no: list[Step]
    max_attempts: int = Field(default=2, ge=1, le=5)


class ConfirmStep(Strict):
    confirm: Confirm


class EscalateSpec(Strict):
    reason: str = "caller_request"
    queue: str | None = None
    message: str | None = None


class EscalateStep(Strict):
    escalate: EscalateSpec


class EndStep(Strict):
    end: Literal["resolved", "abandoned"] = "resolved"


class AnswerStep(Strict):
    answer: Literal["knowledge"] = "knowledge"


STEP_KEYS: dict[str, type[Strict]] = {
    "say": SayStep,
    "ask": AskStep,
    "call": CallStep,
    "branch": BranchStep,
    "confirm": ConfirmStep,
    "escalate": EscalateStep,
    "end": EndStep,
    "answer": AnswerStep,
}


def _step_kind(value: Any) -> str | None:
    """The step's kind is its one known key; anything else is reported as an invalid step."""
    if isinstance(value, dict):
        keys = [k for k in value if k in STEP_KEYS]
        return keys[0] if len(keys) == 1 else None
    for key, model in STEP_KEYS.items():
        if isinstance(value, model):
            return key
    return None


Step = Annotated[
    Annotated[SayStep, Tag("say")]
    | Annotated[AskStep, Tag("ask")]
    | Annotated[CallStep, Tag("call")]
    | Annotated[BranchStep, Tag("branch")]
    | Annotated[ConfirmStep, Tag("confirm")]
    | Annotated[EscalateStep, Tag("escalate")]
    | Annotated[EndStep, Tag("end")]
    | Annotated[AnswerStep, Tag("answer")],
    Discriminator(
        _step_kind,
        custom_error_type="invalid_step",
        custom_error_message="a step needs exactly one of: " + ", ".join(STEP_KEYS),
        custom_error_context={"discriminator": "step kind"},
    ),
]


class Topic(Strict):
    name: str = Field(pattern=NAME_RE)
    description: str = ""
    triggers: list[str] = Field(min_length=3, description="Example caller phrasings (3 or more).")
    requires_verification: bool | None = Field(
        default=None, description="Overrides authentication.required_for for this topic."
    )
    allow_digression: bool = True
    slots: dict[str, Slot] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)


# --- authentication, escalation, generative, voice ----------------------------------------


LOCKOUT_MAX_WINDOW_MINUTES = 1440  # failures older than a day never count, whatever an agent says


class Lockout(Strict):
    """Account-level protection against guessing: failed verifications of one account (or phone
    number) are counted across sessions, channels, agents and workers of the environment; after
    `max_failures` within `window_minutes` the account cannot be verified for `lock_minutes`, and a
    caller who tries is told so and offered a person (escalation reason `verification_locked`)."""

    enabled: bool = True
    max_failures: int = Field(default=5, ge=1, le=100, description="Failed verifications that lock the account.")
    window_minutes: int = Field(
        default=15, ge=1, le=LOCKOUT_MAX_WINDOW_MINUTES, description="The period the failures are counted over."
    )
    lock_minutes: int = Field(
        default=15, ge=1, le=10080, description="How long the account stays locked (cooling-off)."
    )


class Authentication(Strict):
    mode: Literal["anonymous", "verify"] = "anonymous"
    identify_by: Literal["account_number", "phone"] = "account_number"
    verify_with: Literal["pin", "dob"] = "pin"
    verify_action: str | None = Field(
        default=None,
        description="Action called with the identifier and secret; must answer verified/customer_id.",
    )
    account_number_length: int = Field(default=8, ge=4, le=20)
    pin_length: int = Field(default=4, ge=4, le=8)
    max_attempts: int = Field(default=3, ge=1, le=5)
    required_for: list[str] | Literal["all"] = Field(
        default_factory=list, description="Topic names that need a verified caller, or 'all'."
    )
    intro: str = "First I need to verify your identity."
    identify_prompt: str = "What's your account number?"
    identified_message: str = Field(
        default="",
        description="Said once the identifier is accepted, just before the secret prompt (e.g. 'Thanks.'); "
        "not repeated when the secret is asked for again.",
    )
    secret_prompt: str = "And your four digit PIN?"
    failure_message: str = "Sorry, those details don't match our records."
    success_message: str = "Thanks{name_suffix}, you're verified."
    lockout: Lockout = Field(
        default_factory=Lockout,
        description="Failed verifications per account across sessions, and the cooling-off lock after too many.",
    )

    @model_validator(mode="after")
    def _verify_needs_action(self) -> Authentication:
        if self.mode == "verify" and not self.verify_action:
            raise ValueError("mode 'verify' needs a verify_action")
        return self


class EscalationTriggers(Strict):
    human_request: bool = True
    misunderstandings: int = Field(default=3, ge=0, le=10, description="0 disables")
    verification_failed: bool = True
    verification_locked: bool = Field(
        default=True, description="Offer a person when the account is locked after too many failed verifications."
    )
    action_failed: bool = True
    abusive_language: bool = True


CONTEXT_FIELDS = (
    "identity",
    "verified",
    "intents",
    "slots",
    "actions",
    "summary",
    "transcript",
    "reason",
)


class Queue(Strict):
    description: str = ""
    skills: list[str] = Field(
        default_factory=list, description="Skills a desk agent needs to be offered this queue's callers."
    )
    timeout_s: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="How long a caller waits for a desk agent to accept before the fallback runs.",
    )
    offer_timeout_s: int = Field(
        default=20,
        ge=1,
        le=600,
        description="How long one desk agent is offered a caller before it moves to the next (who let it "
        "ring out is set away).",
    )
    fallback: Literal["callback", "message"] = Field(
        default="callback",
        description="When nobody accepts in time (or nobody staffs the queue): take a callback number, or "
        "let the caller leave a message. A caller is never just dropped.",
    )
    max_message_s: int = Field(default=45, ge=5, le=300, description="Longest voice message the fallback records.")
    reconnect_grace_s: int = Field(
        default=20,
        ge=0,
        le=300,
        description="When a desk agent's connection drops mid-conversation (a page reload, a network blip), the "
        "caller holds this long for the same desk agent to reconnect and resume before the fallback runs "
        "(0: the fallback runs at once).",
    )


class HandoffMessages(Strict):
    """What the caller hears around a live-agent handoff: while holding and in the fallback."""

    hold: str = Field(
        default="Thanks for holding. A colleague will be with you shortly.",
        description="Said every hold_message_every_s while the caller waits (hold audio plays in between).",
    )
    hold_message_every_s: int = Field(default=30, ge=5, le=600)
    unavailable: str = "Sorry, no one is available to take your call right now."
    lost: str = Field(
        default="Sorry, we lost the connection to your colleague.",
        description="Said when the desk agent's connection drops during the call, before the fallback.",
    )
    reconnecting: str = Field(
        default="Please hold, we are reconnecting you to your colleague.",
        description="Said when the desk agent's connection drops mid-conversation, while the caller holds for "
        "them to reconnect (the queue's reconnect_grace_s).",
    )
    callback_prompt: str = "Please say or key in your phone number, and we will call you back."
    callback_retry: str = "Sorry, I didn't get a full phone number. Please say or key it in again."
    callback_confirm: str = Field(
        default="Thank you. We will call you back on {number}. Goodbye.",
        description="{number} is read back to the caller digit by digit.",
    )
    callback_failed: str = "Sorry, I couldn't get a phone number. Please call us again later. Goodbye."
    message_prompt: str = (
        "Please leave a short message after the tone, and we will get back to you. "
        "Press the hash key when you have finished."
    )
    message_thanks: str = "Thank you, we have your message. Goodbye."
    message_failed: str = "Sorry, I didn't hear a message. Please call us again later. Goodbye."
    chat_callback_prompt: str = "Please type your phone number, and we will call you back."
    chat_message_prompt: str = "Please type a short message, and we will get back to you."


class Escalation(Strict):
    default_queue: str
    queues: dict[str, Queue] = Field(min_length=1)
    triggers: EscalationTriggers = Field(default_factory=EscalationTriggers)
    context_fields: list[Literal[CONTEXT_FIELDS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(CONTEXT_FIELDS)
    )
    message: str = "Let me connect you with a colleague who can help. One moment please."
    reason_queues: dict[str, str] = Field(
        default_factory=dict, description="Escalation reason -> queue, overriding default_queue."
    )
    handoff: HandoffMessages = Field(
        default_factory=HandoffMessages,
        description="What callers hear while they hold for a desk agent and in the fallback.",
    )


class LlmSettings(Strict):
    url: str
    model: str
    api_key: SecretRef | None = None
    temperature: float = Field(default=0.2, ge=0, le=2)
    timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("api_key")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        return None if v is None else check_secret_ref(v)


class Generative(Strict):
    answers: Literal["off", "retrieval", "llm"] = "off"
    min_score: float = Field(default=0.45, ge=0, le=1)
    scope_enforcement: Literal["strict", "lenient"] = "strict"
    moderation: Literal["off", "low", "medium", "high"] = "medium"
    llm: LlmSettings | None = None

    @model_validator(mode="after")
    def _llm_needs_settings(self) -> Generative:
        if self.answers == "llm" and self.llm is None:
            raise ValueError("answers: llm needs an 'llm' block with url and model")
        return self


class StateTimings(Strict):
    """Turn-taking timings; the defaults suit most calls, states can override them."""

    endpointing_ms: int | None = Field(
        default=None, ge=100, le=4000, description="Silence that ends a turn when unsure if it is complete."
    )
    complete_endpointing_ms: int | None = Field(
        default=None, ge=100, le=4000, description="Silence that ends a turn whose words look complete."
    )
    incomplete_endpointing_ms: int | None = Field(
        default=None,
        ge=100,
        le=6000,
        description="Silence tolerated when the words look unfinished (e.g. half an account number).",
    )
    silence_timeout_ms: int | None = Field(default=None, ge=500, le=60000)


class VoiceSettings(Strict):
    greeting: str = "Hello, how can I help you today?"
    voice: str = Field(default="default", description="TTS voice: joe-us (Piper), pico-en-US, pico-en-GB or default.")
    barge_in: bool = True
    barge_in_min_speech_ms: int = Field(
        default=240,
        ge=60,
        le=1000,
        description="Caller speech over the agent that stops playback, unless it was heard as a backchannel.",
    )
    barge_in_max_hold_ms: int = Field(
        default=600,
        ge=100,
        le=3000,
        description="Speech longer than this stops playback even if it sounded like a backchannel.",
    )
    backchannels: list[str] = Field(
        default_factory=lambda: [
            "uh huh",
            "uh-huh",
            "mm hmm",
            "mhm",
            "okay",
            "ok",
            "yeah",
            "yes",
            "right",
            "sure",
            "i see",
            "got it",
            "alright",
            "hmm",
            "mm",
        ],
        description="Short acknowledgements that do not interrupt the agent.",
    )
    silence_timeout_ms: int = Field(default=6000, ge=500, le=60000)
    silence_reprompts: int = Field(default=2, ge=0, le=5)
    endpointing_ms: int = Field(default=600, ge=100, le=4000)
    complete_endpointing_ms: int = Field(default=350, ge=100, le=4000)
    incomplete_endpointing_ms: int = Field(default=1200, ge=100, le=6000)
    dtmf: bool = True
    dtmf_inter_digit_ms: int = Field(default=2500, ge=500, le=10000)
    states: dict[str, StateTimings] = Field(
        default_factory=dict,
        description="Overrides by state: 'verifying', 'collecting:<slot>', 'confirming', 'idle'.",
    )
    no_input_message: str = "Sorry, I didn't hear anything."
    no_input_goodbye: str = "I still can't hear you, so I'll end the call now. Please call back any time. Goodbye."

    def timing(self, state: str) -> StateTimings:
        """Timings for a state, falling back from 'collecting:pin' to 'collecting' to the defaults."""
        base = StateTimings(
            endpointing_ms=self.endpointing_ms,
            complete_endpointing_ms=self.complete_endpointing_ms,
            incomplete_endpointing_ms=self.incomplete_endpointing_ms,
            silence_timeout_ms=self.silence_timeout_ms,
        )
        for key in (state.split(":", 1)[0], state):
            override = self.states.get(key)
            if override is not None:
                base = base.model_copy(update=override.model_dump(exclude_none=True))
        return base


class Messages(Strict):
    fallback: str = "Sorry, I didn't catch that. Could you say it another way?"
    anything_else: str = "Is there anything else I can help you with?"
    goodbye: str = "Thanks for calling. Goodbye!"
    digression_return: str = "Now, back to where we were."
    action_failed: str = "Sorry, I couldn't reach that system just now."
    abuse: str = "I'm here to help, but I won't continue with that language."
    wrong_customer: str = (
        "I can only discuss the account you verified. For another account, its holder needs to call us."
    )
    verification_locked: str = (
        "For your security, I can't verify this account right now: there have been too many "
        "unsuccessful attempts. Please try again later."
    )
    anything: str = Field(
        default="Is there anything I can help you with?",
        description="Asked after the no-input message when no question is pending.",
    )
    what_else: str = Field(
        default="Sure, what else can I help you with?",
        description="Said when the caller answers yes to 'anything else?'.",
    )
    not_understood: str = Field(
        default="Sorry, I didn't get that.",
        description="Said before asking again for an identifier, a secret or a slot without its own reprompt.",
    )
    heard_digits: str = Field(
        default="I heard {heard} digits, but I need {expected}.",
        description="Said when a number had the wrong count of digits ({heard} and {expected} are counts).",
    )
    digits_so_far: str = Field(
        default="I have {digits} so far. Go on.",
        description="Said when a number came in part (a pause between groups of digits); {digits} is what was heard, read back.",
    )
    digits_go_on: str = Field(
        default="Go on.",
        description="Said when a secret number (a PIN) came in part: secrets are never read back.",
    )
    digits_confirm: str = Field(
        default="That's {digits}. Is that right?",
        description="Asked when a number was put together from parts; {digits} is the number, read back in groups.",
    )
    keypad: str = Field(
        default="You can also key it in on your phone's keypad.",
        description="Said on a call when a number was not understood a second time: keyed digits are exact.",
    )
    yes_or_no: str = Field(
        default="Sorry, was that a yes or a no?",
        description="Said before a confirmation is asked again.",
    )
    try_again: str = Field(
        default="Let's try again.",
        description="Said between the verification failure message and the identify prompt, and when a caller says a number read back is wrong.",
    )
    not_verified: str = Field(
        default="I'm sorry, I can't verify your identity, so I can't help with that.",
        description="Said when verification failed for good and failed verifications do not escalate.",
    )
    no_information: str = Field(
        default="I'm sorry, I don't have that information.",
        description="Said when a topic's answer step finds nothing in the knowledge documents.",
    )
    conversation_ended: str = Field(
        default="This conversation has ended.",
        description="The reply to anything said after the conversation ended.",
    )


class Agent(Strict):
    name: str = Field(pattern=NAME_RE)
    display_name: str | None = None
    description: str = ""
    version: str = "0.1.0"
    language: str = "en"
    scope: Scope
    connectors: dict[str, HttpConnector] = Field(default_factory=dict)
    actions: dict[str, Action] = Field(default_factory=dict)
    authentication: Authentication = Field(default_factory=Authentication)
    escalation: Escalation
    generative: Generative = Field(default_factory=Generative)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    messages: Messages = Field(default_factory=Messages)


# --- conversation tests (tests/*.yaml) ------------------------------------------------------
# Strings in turns and expectations may hold fixture placeholders such as
# {customer.3.account_number} or {customer.3.pin|spoken}, filled in by the test runner.

Outcome = Literal["resolved", "escalated", "abandoned", "unengaged"]
ActionStatus = Literal["ok", "not_found", "error", "denied"]
AnyOf = Annotated[list[str], Field(min_length=1)]


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ActionExpect(Strict):
    """An action that must have been called; `arguments` are checked as a subset, as text."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    status: ActionStatus | None = Field(default=None, description="Expected result status (any if unset).")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class TurnExpect(Strict):
    """What must hold after one caller turn; unset fields are not checked."""

    intent: str | None = Field(
        default=None, description="Recognised topic; null means no intent (out of scope or unclear)."
    )
    reply_contains: AnyOf | None = Field(
        default=None, description="The reply contains at least one of these (case-insensitive)."
    )
    reply_not_contains: AnyOf | None = Field(
        default=None, description="The reply contains none of these (case-insensitive)."
    )
    state: str | None = Field(default=None, description="Session state after the turn, e.g. verifying:secret.")
    slots: dict[str, Any] = Field(default_factory=dict, description="Slot values after the turn (compared as text).")
    actions: list[ActionExpect] = Field(default_factory=list, description="Actions called during this turn.")
    actions_not_called: list[str] = Field(default_factory=list, description="Actions not called during this turn.")
    events: list[str] = Field(default_factory=list, description="Event types the turn must emit (e.g. refused).")
    citation: str | None = Field(default=None, description="A knowledge citation the reply must carry (prefix).")
    verified: bool | None = None
    ended: bool | None = None
    outcome: Outcome | None = None

    _any_of = field_validator("reply_contains", "reply_not_contains", mode="before")(
        classmethod(lambda cls, v: _listify(v))
    )

    def checks(self) -> set[str]:
        return set(self.model_fields_set)


class EscalationExpect(Strict):
    queue: str | None = None
    reason: str | None = None
    summary_contains: AnyOf | None = Field(default=None, description="The packet summary contains one of these.")

    _any_of = field_validator("summary_contains", mode="before")(classmethod(lambda cls, v: _listify(v)))


class ConversationExpect(Strict):
    """What must hold once the conversation is over (the session is closed if it did not end)."""

    outcome: Outcome | None = None
    escalation: EscalationExpect | None = None
    actions: list[ActionExpect] = Field(default_factory=list, description="Actions called at some point.")
    actions_not_called: list[str] = Field(default_factory=list)
    verified: bool | None = None


class ScriptedTurn(Strict):
    """One caller turn: words (`say`) or keypad digits (`dtmf`), and what must follow it."""

    say: str | None = None
    dtmf: str | None = Field(default=None, description="Keypad digits (0-9 * #), sent as DTMF.")
    voice: bool | None = Field(
        default=None,
        description="Speak this turn (synthesise, optionally degrade, recognise) even in text mode; "
        "false keeps it text in voice mode. Unset: follow the run's mode.",
    )
    telephone: bool | None = Field(default=None, description="Band-limit to 8 kHz mu-law (voice turns).")
    snr_db: float | None = Field(default=None, ge=-10, le=80, description="Add noise at this SNR (voice turns).")
    expect: TurnExpect = Field(default_factory=TurnExpect)
    _line: int = PrivateAttr(default=0)

    @model_validator(mode="after")
    def _one_input(self) -> ScriptedTurn:
        if (self.say is None) == (self.dtmf is None):
            raise ValueError("a turn needs exactly one of 'say' or 'dtmf'")
        if self.dtmf is not None and self.voice:
            raise ValueError("a dtmf turn cannot be spoken (voice: true)")
        return self

    @property
    def line(self) -> int:
        return self._line


class ConversationTest(Strict):
    """A scripted conversation with the agent and what must happen in it."""

    name: str = Field(min_length=1)
    description: str = ""
    category: str = Field(default="", description="Groups results (default: the file's name).")
    caller_voice: str | None = Field(
        default=None, description="Caller voice for spoken turns (default: one unlike the agent's)."
    )
    telephone: bool = Field(default=False, description="Default for spoken turns: band-limit to a phone line.")
    snr_db: float | None = Field(default=None, ge=-10, le=80, description="Default for spoken turns: noise SNR.")
    turns: list[ScriptedTurn] = Field(min_length=1)
    expect: ConversationExpect = Field(default_factory=ConversationExpect)
    _source: str = PrivateAttr(default="")

    @property
    def source(self) -> str:
        """Where the test is defined, as path:line (set by the loader)."""
        return self._source


class ConversationTestFile(Strict):
    """A tests/*.yaml file holding several tests (a file may also hold a single test)."""

    tests: list[ConversationTest] = Field(min_length=1)


class KnowledgeDoc(BaseModel):
    """A markdown document from knowledge/, split into sections later by the retriever."""

    path: str
    title: str
    text: str


class BundleSource(BaseModel):
    """Everything loaded from an agent directory, validated and cross-checked."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    root: str
    agent: Agent
    topics: dict[str, Topic]
    knowledge: list[KnowledgeDoc] = Field(default_factory=list)
    tests: list[ConversationTest] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> text")

    def topic_requires_verification(self, topic: Topic) -> bool:
        if topic.requires_verification is not None:
            return topic.requires_verification and self.agent.authentication.mode == "verify"
        auth = self.agent.authentication
        if auth.mode != "verify":
            return False
        return auth.required_for == "all" or topic.name in auth.required_for


CallStep.model_rebuild()
Branch.model_rebuild()
Confirm.model_rebuild()
BranchStep.model_rebuild()
ConfirmStep.model_rebuild()
Topic.model_rebuild()
