"""The fake Telegram server speaks the Bot API well enough for the real python-telegram-bot."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, Update
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from .telegram_api import ANY_METHOD, FakeTelegram, FloodLimits

PRIVATE = 42
GROUP = -1001234567890
KEYBOARD = InlineKeyboardMarkup(
    [
        [
            InlineKeyboardButton("Yes", callback_data="yes"),
            InlineKeyboardButton("No", callback_data="no"),
        ]
    ]
)


@pytest.fixture(autouse=True)
def _timedelta_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    # PTB 22 warns on every RetryAfter unless it may return retry_after as a timedelta.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        server.add_chat(PRIVATE)
        server.add_chat(GROUP, title="Test supergroup")
        yield server


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url) as client:
        yield client


def build_app(tg: FakeTelegram) -> Application:
    return (
        Application.builder()
        .token(tg.token)
        .base_url(tg.base_url)
        .base_file_url(tg.base_file_url)
        .build()
    )


@contextlib.asynccontextmanager
async def polling(app: Application) -> AsyncIterator[list[BaseException]]:
    """Run the application with long polling; yields the errors its handlers raised."""
    errors: list[BaseException] = []

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.append(context.error or RuntimeError("unknown error"))

    app.add_error_handler(on_error)
    async with app:
        assert app.updater is not None
        await app.updater.start_polling(timeout=1, poll_interval=0)
        await app.start()
        try:
            yield errors
        finally:
            await app.updater.stop()
            await app.stop()


# ----------------------------------------------------------------- basics


async def test_get_me_and_commands(bot: Bot, tg: FakeTelegram) -> None:
    assert bot.username == tg.bot_username
    assert bot.id == tg.bot_user["id"]
    assert await bot.set_my_commands([("start", "Start"), ("reset", "Forget the dialogue")])
    commands = await bot.get_my_commands()
    assert [(c.command, c.description) for c in commands] == [
        ("start", "Start"),
        ("reset", "Forget the dialogue"),
    ]
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        await bot.set_my_commands([("Bad-Name", "x")])
    assert [c.method for c in tg.calls][:1] == ["getMe"]


async def test_bad_tokens_are_rejected(tg: FakeTelegram) -> None:
    for token in ("987654321:" + "B" * 35, "not-a-token"):
        with pytest.raises(InvalidToken):
            async with Bot(token, base_url=tg.base_url):
                pass
    assert [c.status for c in tg.calls_of("getMe")] == [401, 404]


async def test_unknown_method_is_not_found(bot: Bot, tg: FakeTelegram) -> None:
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("fooBar", api_kwargs={"chat_id": PRIVATE})
    call = tg.calls_of("fooBar")[0]
    assert (call.status, call.description, call.chat_id) == (404, "Not Found", PRIVATE)


async def test_calls_are_recorded_with_decoded_params(bot: Bot, tg: FakeTelegram) -> None:
    await bot.send_message(PRIVATE, "hi", reply_markup=KEYBOARD, disable_notification=True)
    call = tg.calls_of("sendMessage")[0]
    assert call.is_ok and call.chat_id == PRIVATE
    assert call.params["disable_notification"] is True
    assert call.params["reply_markup"] == KEYBOARD.to_dict()
    assert call.at <= call.finished_at
    assert [c.at for c in tg.calls] == sorted(c.at for c in tg.calls)


async def test_unknown_chat_is_not_found(bot: Bot) -> None:
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(999, "hello?")


# ----------------------------------------------------------------- getUpdates


async def test_long_poll_is_held_until_an_update_arrives(bot: Bot, tg: FakeTelegram) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for(lambda: tg.num_waiting_polls == 1)
    assert not poll.done()
    sent = tg.push_text(PRIVATE, "hello")
    updates = await poll
    assert [u.message.text for u in updates] == ["hello"]
    assert updates[0].message.message_id == sent["message_id"]
    # Not confirmed yet: the same update comes again until an offset passes it.
    again = await bot.get_updates(timeout=0)
    assert [u.update_id for u in again] == [updates[0].update_id]
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == ()
    assert tg.pending_updates == []


async def test_long_poll_without_updates_returns_empty(bot: Bot, tg: FakeTelegram) -> None:
    assert await bot.get_updates(timeout=1) == ()
    assert tg.calls_of("getUpdates")[0].params["timeout"] == 1


async def test_second_poller_terminates_the_first(tg: FakeTelegram) -> None:
    async with (
        Bot(tg.token, base_url=tg.base_url) as first,
        Bot(tg.token, base_url=tg.base_url) as second,
    ):
        held = asyncio.create_task(first.get_updates(timeout=5))
        await tg.wait_for(lambda: tg.num_waiting_polls == 1)
        assert await second.get_updates(timeout=0) == ()
        with pytest.raises(Conflict, match="terminated by other getUpdates"):
            await held


async def test_application_replies_to_a_private_message(tg: FakeTelegram) -> None:
    app = build_app(tg)

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        # PTB quotes the user's message by default only in groups.
        text = f"echo: <b>{update.message.text}</b>"
        await update.message.reply_text(text, parse_mode="HTML", do_quote=True)

    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    async with polling(app) as errors:
        user_message = tg.push_text(PRIVATE, "ping")
        reply = await tg.wait_for(lambda: tg.chat(PRIVATE).last_bot_message)
    assert errors == []
    assert reply.text == "echo: ping"
    assert reply.raw == "echo: <b>ping</b>"
    assert reply.reply_to_message_id == user_message["message_id"]
    assert tg.calls_of("deleteWebhook")  # PTB clears the webhook before polling


async def test_application_sees_group_update_kinds(tg: FakeTelegram) -> None:
    app = build_app(tg)
    seen: list[tuple[str, Any]] = []

    async def on_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append(("command", context.args))

    async def on_mention(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        seen.append(("mention", update.message.text))

    async def on_reply(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.reply_to_message is not None
        seen.append(("reply", update.message.reply_to_message.text))

    async def on_media(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        message = update.message
        kind = "sticker" if message.sticker else "photo" if message.photo else "voice"
        seen.append(("media", kind))

    app.add_handler(CommandHandler("start", on_start))
    app.add_handler(MessageHandler(filters.Entity(MessageEntity.MENTION), on_mention))
    app.add_handler(MessageHandler(filters.REPLY & filters.TEXT, on_reply))
    app.add_handler(MessageHandler(filters.Sticker.ALL | filters.PHOTO | filters.VOICE, on_media))
    async with polling(app) as errors:
        bot_message = await app.bot.send_message(GROUP, "I am the bot")
        tg.push_command(GROUP, "start", "now", user_id=7, with_username=True)
        tg.push_text(GROUP, "what do you think?", mention=True)
        tg.push_text(GROUP, "answer to you", reply_to=bot_message.message_id)
        for kind in ("sticker", "photo", "voice"):
            tg.push_media(GROUP, kind)
        await tg.wait_for(lambda: len(seen) == 6)
    assert errors == []
    assert seen == [
        ("command", ["now"]),
        ("mention", f"@{tg.bot_username} what do you think?"),
        ("reply", "I am the bot"),
        ("media", "sticker"),
        ("media", "photo"),
        ("media", "voice"),
    ]


async def test_polling_survives_a_server_error(tg: FakeTelegram) -> None:
    app = build_app(tg)
    received: list[str] = []

    async def record(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        received.append(update.message.text)

    app.add_handler(MessageHandler(filters.TEXT, record))
    tg.inject_error("getUpdates", 502, raw_body="<html><h1>502 Bad Gateway</h1></html>")
    async with polling(app):
        tg.push_text(PRIVATE, "after the outage")
        await tg.wait_for(lambda: received)
    assert received == ["after the outage"]
    assert [c.status for c in tg.calls_of("getUpdates")][:2] == [502, 200]


# ----------------------------------------------------------------- messages


async def test_send_and_edit_track_what_the_chat_shows(bot: Bot, tg: FakeTelegram) -> None:
    html = "<b>Hi</b> &lt;there&gt; &amp; AT&T"
    sent = await bot.send_message(PRIVATE, html, parse_mode=ParseMode.HTML)
    assert sent.text == "Hi <there> & AT&T"
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [("bold", 0, 2)]
    message = tg.message(PRIVATE, sent.message_id)
    assert (message.text, message.raw, message.is_from_bot) == (sent.text, html, True)

    edited = await bot.edit_message_text(
        "Hi <i>again</i>",
        chat_id=PRIVATE,
        message_id=sent.message_id,
        parse_mode="HTML",
        reply_markup=KEYBOARD,
    )
    assert edited.edit_date is not None
    assert message.text == "Hi again"
    assert message.buttons[0]["callback_data"] == "yes"
    # Leaving reply_markup out of an edit removes the keyboard, as on Telegram.
    await bot.edit_message_text("Done", chat_id=PRIVATE, message_id=sent.message_id)
    assert message.reply_markup is None
    assert message.versions == ["Hi <there> & AT&T", "Hi again", "Done"]
    assert tg.chat(PRIVATE).texts == ["Done"]


@pytest.mark.parametrize(
    ("html", "error"),
    [
        ("<b>bold", 'find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("2 < 3", 'unsupported start tag "" at byte offset 2'),
        ("<br>line", 'unsupported start tag "br" at byte offset 0'),
        ("x</b>", "unexpected end tag at byte offset 1"),
        ('<span class="x">y</span>', 'tag "span" must have class "tg-spoiler"'),
        ("é<u", "unclosed start tag at byte offset 2"),
    ],
)
async def test_invalid_html_is_refused(bot: Bot, tg: FakeTelegram, html: str, error: str) -> None:
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities") as caught:
        await bot.send_message(PRIVATE, html, parse_mode="HTML")
    assert error in caught.value.message.lower()
    assert tg.chat(PRIVATE).texts == []


@pytest.mark.parametrize(
    ("html", "visible", "entity"),
    [
        ('<a href="https://example.org/?a=1&amp;b=2">link</a>', "link", "text_link"),
        (
            "<blockquote expandable>long thoughts</blockquote>",
            "long thoughts",
            "expandable_blockquote",
        ),
        ("<blockquote>quote</blockquote>", "quote", "blockquote"),
        ('<pre><code class="language-python">print(1)</code></pre>', "print(1)", "pre"),
        ("<tg-spoiler>secret</tg-spoiler>", "secret", "spoiler"),
        ('<span class="tg-spoiler">secret</span>', "secret", "spoiler"),
        ("<s>gone</s> &#128512;", "gone 😀", "strikethrough"),
        ("<STRONG>loud</STRONG>", "loud", "bold"),
    ],
)
async def test_telegram_html_subset_is_parsed(
    bot: Bot, html: str, visible: str, entity: str
) -> None:
    sent = await bot.send_message(PRIVATE, html, parse_mode="HTML")
    assert sent.text == visible
    assert sent.entities[0].type == entity
    if entity == "pre":
        assert sent.entities[0].language == "python"
    if entity == "text_link":
        assert sent.entities[0].url == "https://example.org/?a=1&b=2"


async def test_text_limits(bot: Bot, tg: FakeTelegram) -> None:
    for empty in ("", "   \n", "<b></b>"):
        with pytest.raises(BadRequest, match="Message text is empty"):
            await bot.send_message(PRIVATE, empty, parse_mode="HTML")
    for too_long in ("x" * 4097, "😀" * 2049, "<b>" + "x" * 4097 + "</b>"):
        with pytest.raises(BadRequest, match="Message is too long"):
            await bot.send_message(PRIVATE, too_long, parse_mode="HTML")
    # The limit counts visible UTF-16 units: tags and surrounding whitespace are free.
    for longest in ("x" * 4096, "😀" * 2048, "<i>" + "x" * 4096 + "</i>", "  " + "x" * 4096):
        await bot.send_message(PRIVATE, longest, parse_mode="HTML")
    assert len(tg.chat(PRIVATE).texts) == 4


async def test_identical_edits_are_not_modified(bot: Bot, tg: FakeTelegram) -> None:
    sent = await bot.send_message(PRIVATE, "<b>same</b>", parse_mode="HTML", reply_markup=KEYBOARD)
    with pytest.raises(BadRequest, match="Message is not modified: specified new message content"):
        await bot.edit_message_text(
            "<b>same</b>",
            chat_id=PRIVATE,
            message_id=sent.message_id,
            parse_mode="HTML",
            reply_markup=KEYBOARD,
        )
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_reply_markup(PRIVATE, sent.message_id, reply_markup=KEYBOARD)
    # Same visible text but different entities is a change.
    await bot.edit_message_text(
        "same", chat_id=PRIVATE, message_id=sent.message_id, reply_markup=KEYBOARD
    )
    await bot.edit_message_reply_markup(PRIVATE, sent.message_id, reply_markup=None)
    message = tg.message(PRIVATE, sent.message_id)
    assert (message.text, message.entities, message.reply_markup) == ("same", (), None)


async def test_chat_action_and_delete(bot: Bot, tg: FakeTelegram) -> None:
    assert await bot.send_chat_action(PRIVATE, "typing")
    assert [a.action for a in tg.chat(PRIVATE).actions] == ["typing"]
    with pytest.raises(BadRequest, match="Wrong parameter action"):
        await bot.send_chat_action(PRIVATE, "dancing")
    sent = await bot.send_message(PRIVATE, "short-lived")
    assert await bot.delete_message(PRIVATE, sent.message_id)
    assert tg.chat(PRIVATE).texts == []
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(PRIVATE, sent.message_id)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=PRIVATE, message_id=sent.message_id)


# ----------------------------------------------------------------- drafts


async def test_message_draft_in_private_chat(bot: Bot, tg: FakeTelegram) -> None:
    assert await bot.send_message_draft(PRIVATE, 7, "")  # "Thinking..." placeholder
    assert await bot.send_message_draft(PRIVATE, 7, "Thinking <b>hard</b>", parse_mode="HTML")
    draft = tg.current_draft(PRIVATE)
    assert draft is not None
    assert (draft.draft_id, draft.text, draft.raw) == (7, "Thinking hard", "Thinking <b>hard</b>")
    assert [d.text for d in tg.chat(PRIVATE).drafts] == ["", "Thinking hard"]
    call = tg.calls_of("sendMessageDraft")[-1]
    assert call.params == {
        "chat_id": PRIVATE,
        "draft_id": 7,
        "text": "Thinking <b>hard</b>",
        "parse_mode": "HTML",
    }
    await bot.send_message(PRIVATE, "The answer")
    assert tg.current_draft(PRIVATE) is None  # the final message replaces the draft


async def test_message_draft_is_refused_in_groups(bot: Bot, tg: FakeTelegram) -> None:
    with pytest.raises(BadRequest, match=r"(?i)textdraft_peer_invalid"):
        await bot.send_message_draft(GROUP, 1, "partial")
    assert tg.chat(GROUP).drafts == []


# ----------------------------------------------------------------- faults


async def test_injected_retry_after(bot: Bot, tg: FakeTelegram) -> None:
    tg.inject_retry_after("sendMessage", 3, chat_id=PRIVATE, times=2)
    for _ in range(2):
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(PRIVATE, "hello")
        assert caught.value.retry_after == dtm.timedelta(seconds=3)
    await bot.send_message(GROUP, "other chats are not limited")
    await bot.send_message(PRIVATE, "now it goes through")
    assert tg.chat(PRIVATE).texts == ["now it goes through"]

    tg.inject_retry_after(ANY_METHOD, 5)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_chat_action(GROUP, "typing")
    assert caught.value.retry_after == dtm.timedelta(seconds=5)
    assert tg.calls_of("sendChatAction")[0].description == "Too Many Requests: retry after 5"


async def test_flood_control_limits_chats_and_groups() -> None:
    now = [0.0]
    async with FakeTelegram(clock=lambda: now[0]) as tg:
        tg.add_chat(PRIVATE)
        tg.add_chat(GROUP)
        tg.set_flood_control(FloodLimits())
        async with Bot(tg.token, base_url=tg.base_url) as bot:
            await bot.send_message(PRIVATE, "first")
            now[0] = 0.5
            with pytest.raises(RetryAfter) as caught:
                await bot.edit_message_text("second", chat_id=PRIVATE, message_id=1)
            assert caught.value.retry_after == dtm.timedelta(seconds=1)
            await bot.send_chat_action(PRIVATE, "typing")  # actions are not limited
            now[0] = 1.0
            await bot.edit_message_text("second", chat_id=PRIVATE, message_id=1)

            for second in range(20):  # one per second: within the per-chat limit
                now[0] = 100.0 + second
                await bot.send_message(GROUP, f"group message {second}")
            now[0] = 120.0
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(GROUP, "the 21st in a minute")
            assert caught.value.retry_after == dtm.timedelta(seconds=40)
            now[0] = 160.0
            await bot.send_message(GROUP, "a minute after the first")
    assert len(tg.chat(GROUP).texts) == 21


async def test_server_errors_are_network_errors(bot: Bot, tg: FakeTelegram) -> None:
    tg.inject_error("sendMessage", 500)
    with pytest.raises(NetworkError, match="Internal Server Error") as caught:
        await bot.send_message(PRIVATE, "hello")
    assert not isinstance(caught.value, BadRequest)
    tg.inject_error("sendMessage", 502, raw_body="<html>502 Bad Gateway</html>")
    with pytest.raises(NetworkError, match=r"Bad Gateway \(502\)"):
        await bot.send_message(PRIVATE, "hello")
    await bot.send_message(PRIVATE, "hello")
    assert [c.status for c in tg.calls_of("sendMessage")] == [500, 502, 200]


async def test_late_answer_times_out_although_the_message_was_sent(
    bot: Bot, tg: FakeTelegram
) -> None:
    tg.inject_delay("sendMessage", 5.0)
    with pytest.raises(TimedOut):
        await bot.send_message(PRIVATE, "slow", read_timeout=0.5)
    assert tg.chat(PRIVATE).texts == ["slow"]  # a blind retry would send it twice
    call = await tg.wait_for_call("sendMessage")
    assert call.status == 499  # the client closed the connection before the answer


async def test_any_method_faults_spare_get_updates(bot: Bot, tg: FakeTelegram) -> None:
    tg.inject_error(ANY_METHOD, 500)
    assert await bot.get_updates(timeout=0) == ()
    with pytest.raises(NetworkError):
        await bot.send_chat_action(PRIVATE, "typing")


# ----------------------------------------------------------------- callback queries


async def test_button_press_reaches_the_application(tg: FakeTelegram) -> None:
    app = build_app(tg)

    async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer(f"You chose {query.data}")
        await query.edit_message_text(f"Chosen: {query.data}")

    app.add_handler(CallbackQueryHandler(on_button))
    async with polling(app) as errors:
        question = await app.bot.send_message(PRIVATE, "Continue?", reply_markup=KEYBOARD)
        with pytest.raises(ValueError, match="no button"):
            tg.push_callback(PRIVATE, question.message_id, "maybe")
        query_id = tg.push_callback(PRIVATE, question.message_id, "yes")
        message = tg.message(PRIVATE, question.message_id)
        await tg.wait_for(lambda: message.text == "Chosen: yes")
        with pytest.raises(BadRequest, match="Query is too old"):
            await app.bot.answer_callback_query(query_id)  # a query is answered only once
    assert errors == []
    assert tg.callback_queries[query_id].answer == {"text": "You chose yes"}
    assert message.reply_markup is None


# ----------------------------------------------------------------- webhooks

HOOK_SECRET = "s3cret_Token-42"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_webhook_methods_behave_like_telegram(bot: Bot, tg: FakeTelegram) -> None:
    url = "https://bot.example.org/hook"
    assert await bot.set_webhook(url, secret_token=HOOK_SECRET, allowed_updates=["message"])
    assert tg.webhook is not None and tg.webhook.secret_token == HOOK_SECRET
    tg.push_text(PRIVATE, "queued while the webhook is set")
    info = await bot.get_webhook_info()
    assert (info.url, info.pending_update_count, info.max_connections) == (url, 1, 40)
    assert info.allowed_updates == ("message",)
    assert HOOK_SECRET not in str(tg.calls_of("getWebhookInfo")[0].result)
    with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
        await bot.get_updates(timeout=0)
    with pytest.raises(BadRequest, match="unallowed characters"):
        await bot.set_webhook(url, secret_token="base64+/=")
    with pytest.raises(BadRequest, match=r"(?i)https url must be provided"):
        await bot.set_webhook("ftp://bot.example.org/hook")
    assert tg.webhook.url == url  # a refused setWebhook changes nothing
    assert await bot.delete_webhook()
    assert tg.webhook is None
    assert (await bot.get_webhook_info()).url == ""
    updates = await bot.get_updates(timeout=0)
    assert [u.message.text for u in updates] == ["queued while the webhook is set"]


async def test_set_webhook_ends_a_held_long_poll(tg: FakeTelegram) -> None:
    async with (
        Bot(tg.token, base_url=tg.base_url) as poller,
        Bot(tg.token, base_url=tg.base_url) as other,
    ):
        held = asyncio.create_task(poller.get_updates(timeout=5))
        await tg.wait_for(lambda: tg.num_waiting_polls == 1)
        assert await other.set_webhook("http://127.0.0.1:8443/hook")
        with pytest.raises(Conflict, match="terminated by setWebhook request"):
            await held


async def test_application_on_a_webhook_gets_posted_updates(tg: FakeTelegram) -> None:
    app = build_app(tg)
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text(f"echo: {update.message.text}")

    app.add_handler(MessageHandler(filters.TEXT, echo))
    async with app:
        assert app.updater is not None
        await app.updater.start_webhook(
            listen="127.0.0.1",
            port=port,
            url_path="hook",
            webhook_url=url,
            secret_token=HOOK_SECRET,
        )
        await app.start()
        try:
            assert tg.calls_of("setWebhook")[0].params["secret_token"] == HOOK_SECRET
            refused = await tg.push_webhook_update(PRIVATE, "forged", secret_token="guess")
            taken = await tg.push_webhook_update(PRIVATE, "ping")
            reply = await tg.wait_for(lambda: tg.chat(PRIVATE).last_bot_message)
        finally:
            await app.updater.stop()
            await app.stop()
        after_stop = await tg.push_webhook_update(PRIVATE, "anyone there?")
    assert (refused.status, refused.secret_token) == (403, "guess")
    assert (taken.status, taken.secret_token, taken.url) == (200, HOOK_SECRET, url)
    assert taken.update["message"]["text"] == "ping"
    assert reply.text == "echo: ping"
    assert tg.chat(PRIVATE).texts == ["echo: ping"]
    assert (after_stop.status, after_stop.error) == (None, "Connection refused")
    # Not taken: still pending at Telegram, and getWebhookInfo tells why.
    assert [u["message"]["text"] for u in tg.pending_updates] == ["forged", "anyone there?"]
    assert tg.webhook is not None and tg.webhook.last_error_message == "Connection refused"
