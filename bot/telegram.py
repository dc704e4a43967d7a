"""The Telegram adapter: the outbox transport over aiogram, and typed callback data.

Callback data classes (≤ 64 bytes, short versioned prefixes) live here so domain services can
put buttons on outbox messages. Every callback handler must re-check that the caller may act
on the object *now*: callback data is user input.
"""

from __future__ import annotations

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNotFound,
    TelegramRetryAfter,
)
from aiogram.filters.callback_data import CallbackData
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup

from bot.sender import (
    Forbidden,
    Moved,
    NothingToEdit,
    Outgoing,
    Rejected,
    RetryLater,
    Throttled,
)

__all__ = ["AiogramTransport", "CallbackData"]

NOTHING_TO_EDIT = ("message is not modified", "message to edit not found")
"""Telegram's answers to an edit that has nothing to do (the text is already so, or the message
was deleted): the edit is done."""


class AiogramTransport:
    """Sends outbox rows with aiogram; maps Telegram's errors to the sender's (bot/sender.py)."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def deliver(self, message: Outgoing) -> int:
        markup = (
            InlineKeyboardMarkup.model_validate(message.reply_markup)
            if message.reply_markup
            else None
        )
        try:
            if message.message_id is not None:
                return await self._edit(message, message.message_id, markup)
            if message.method == "sendDocument" and message.document is not None:
                sent = await self.bot.send_document(
                    message.chat_id,
                    BufferedInputFile(message.document, filename=message.document_name or "file"),
                    caption=message.text or None,
                    reply_markup=markup,
                )
            else:
                sent = await self.bot.send_message(
                    message.chat_id, message.text, reply_markup=markup
                )
        except TelegramForbiddenError as error:
            raise Forbidden(error.message) from error
        except TelegramRetryAfter as error:
            raise Throttled(error.retry_after) from error
        except TelegramMigrateToChat as error:
            raise Moved(error.migrate_to_chat_id) from error
        except (TelegramBadRequest, TelegramNotFound, TelegramEntityTooLarge) as error:
            if message.message_id is not None and any(
                reason in error.message for reason in NOTHING_TO_EDIT
            ):
                raise NothingToEdit(error.message) from error
            raise Rejected(error.message) from error
        except TelegramAPIError as error:
            # Network errors, 5xx, and 401/409 that an operator must fix: none is this message's
            # fault, so it waits (with backoff) instead of being dropped.
            raise RetryLater(error.message) from error
        return sent.message_id

    async def _edit(
        self, message: Outgoing, message_id: int, markup: InlineKeyboardMarkup | None
    ) -> int:
        """editMessageText, or editMessageReplyMarkup for a row without text; a markup of None
        removes the keyboard."""
        if message.method == "editMessageReplyMarkup":
            await self.bot.edit_message_reply_markup(
                chat_id=message.chat_id, message_id=message_id, reply_markup=markup
            )
        else:
            await self.bot.edit_message_text(
                message.text, chat_id=message.chat_id, message_id=message_id, reply_markup=markup
            )
        return message_id


# --- issue 4: assignments, recusal, results, co-signature, review, follow-up, transfer -------


class AssignmentCb(CallbackData, prefix="a1"):
    """确认接收 / 申请回避 / 详情 on an assignment; `reason` picks a common recusal reason."""

    action: str  # confirm | recuse | reason | detail | back
    assignment_id: int
    reason: int = 0


class RecusalCb(CallbackData, prefix="x1"):
    """The liaison's (or the office's) decision on a recusal request."""

    action: str  # show | approve | reject
    request_id: int


class ResultCb(CallbackData, prefix="r1"):
    """One answer in the result dialog; `step` is the step the button belongs to, so a button
    of an older step is recognised as stale."""

    action: str  # open | pick | back | cancel | next | submit | page | resume
    inspection_id: int
    step: str = ""
    value: str = ""


class CoSignCb(CallbackData, prefix="c1"):
    """确认无误 / 有异议 on one co-signature row (one member, one submission)."""

    action: str  # confirm | object
    cosign_id: int


class ReviewCb(CallbackData, prefix="v1"):
    """复核 of one submission of a result: `version` makes buttons of older rounds stale."""

    action: str  # show | approve | return
    result_id: int
    version: int


class FollowUpCb(CallbackData, prefix="f1"):
    """后续处置: `list` an inspection's follow-ups (ref = inspection id); `progress`,
    `complete`, `today`, `yesterday`, `cancel` on one follow-up (ref = follow-up id)."""

    action: str
    ref: int


class TransferCb(CallbackData, prefix="k1"):
    """The receiving department's liaison acknowledges a transfer (抄告、移送)."""

    action: str  # show | ack
    transfer_id: int


# --- issue 5: 三单 decisions ------------------------------------------------------------------


class NoticeCb(CallbackData, prefix="n1"):
    """The office's decision on a 失职问责单: `hold` (问责) / `exempt` (免责) show the reasons,
    `pick` records reason number `reason` of list `decision` ("h" | "e"), `other` asks for a
    typed reason, `back` shows the two choices again."""

    action: str  # hold | exempt | pick | other | back
    notice_id: int
    decision: str = ""
    reason: int = 0


# --- issue 3: the task dialog and the draw ---------------------------------------------------


class TaskCb(CallbackData, prefix="t1"):
    """/task dialog: `step` the button belongs to (an older step's button is stale), `act`
    pick | toggle | done | back | cancel | create | reinspect, `n` an option's index."""

    step: str
    act: str
    n: int = -1


class DrawCb(CallbackData, prefix="d1"):
    """run | drop a committed draw; `list`: a liaison asks for department `n` of the task."""

    act: str
    draw_id: int
    n: int = 0
