"""The Telegram adapter: the outbox transport over aiogram, and typed callback data.

Callback data classes (≤ 64 bytes, short versioned prefixes) live here so domain services can
put buttons on outbox messages. Every callback handler must re-check that the caller may act
on the object *now*: callback data is user input.
"""

from __future__ import annotations

from aiogram import Bot
from aiogram.exceptions import (
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.filters.callback_data import CallbackData
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup

from bot.sender import Forbidden, Outgoing, RetryLater

__all__ = ["AiogramTransport", "CallbackData"]


class AiogramTransport:
    """Sends outbox rows with aiogram; maps Telegram's errors to the sender's."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def deliver(self, message: Outgoing) -> int:
        markup = (
            InlineKeyboardMarkup.model_validate(message.reply_markup)
            if message.reply_markup
            else None
        )
        try:
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
            raise RetryLater(error.retry_after) from error
        except (TelegramNetworkError, TelegramServerError) as error:
            raise RetryLater(5) from error
        return sent.message_id
