"""The Telegram front-end: python-telegram-bot Application -> ChatService, answers streamed back."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

from telegram import BotCommandScopeAllGroupChats, BotCommandScopeDefault, Message, Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from bot.chat.service import ChatService
from bot.chat.turn import TurnComposer
from bot.config import ChatSettings, ConfigError, Settings, TelegramSettings
from bot.frontends.redact import Redaction, url_password
from bot.frontends.telegram_ui.access import Access
from bot.frontends.telegram_ui.commands import Commands, bot_commands
from bot.frontends.telegram_ui.messages import PLATFORM, BotIdentity, TurnReader
from bot.frontends.telegram_ui.notices import Notices
from bot.frontends.telegram_ui.replies import (
    CONTINUE_PREFIX,
    REGENERATE_PREFIX,
    STOP_PREFIX,
    ReplyOptions,
    ReplyRunner,
)
from bot.frontends.telegram_ui.request import CountingRequest, ErrorCounter
from bot.metrics import Metrics, PlatformErrorKind
from bot.reload import LiveSettings, Reloader
from bot.render.delivery import DeliveryOptions
from bot.render.pacing import ChatPacers, Clock, RateBudget, SystemClock
from bot.store.records import InterruptedReply

log = logging.getLogger(__name__)

ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
# Loggers that may print request URLs, which carry the bot token (PTB logs its base URL).
URL_LOGGERS = ("httpx", "httpcore", "telegram")


def file_url_for(base_url: str) -> str:
    """The file-download base for an API base ('.../bot' -> '.../file/bot')."""
    if base_url.endswith("/bot"):
        return base_url[: -len("/bot")] + "/file/bot"
    return base_url.rstrip("/") + "/file/bot"


class TelegramFrontend:
    """Serves Telegram chats: long polling (or a webhook), concurrent updates, streamed answers."""

    name = "telegram"

    def __init__(
        self,
        settings: TelegramSettings,
        service: ChatService,
        *,
        chat: ChatSettings,
        clock: Clock | None = None,
        poll_timeout: float = 10.0,
        group_window: float = 60.0,
        tick_interval: float = DeliveryOptions.tick_interval,
        final_timeout: float = DeliveryOptions.final_timeout,
        close_timeout: float = 30.0,
        global_calls_per_second: int | None = 30,
        use_drafts: bool = True,
        metrics: Metrics | None = None,
        live: LiveSettings | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._poll_timeout = poll_timeout
        self._close_timeout = close_timeout
        # Allowlists and admins are read from `live` on every update: a reload applies at once.
        live = live or LiveSettings(Settings(telegram=settings, chat=chat))
        self._access = Access(lambda: live.settings.telegram)
        self._me: BotIdentity | None = None
        # Without a secret anyone who learns the webhook URL could post updates as any user,
        # admins included: with none configured, a fresh random one is registered at each start.
        self._webhook_secret = settings.webhook_secret or secrets.token_urlsafe(32)
        self._redaction = Redaction(
            [settings.token, self._webhook_secret, url_password(settings.proxy)], URL_LOGGERS
        )
        self._redaction.install()  # before the Bot is built: it logs its URL
        self._app = self._build_application(settings, self._count_error)
        clock = clock or SystemClock()
        # Telegram's bot-wide limit (about 30 messages a second); waits, never pauses the bot.
        budget = None
        if global_calls_per_second:
            budget = RateBudget(clock, max_calls=global_calls_per_second, per_seconds=1.0)
        self._pacers = pacers = ChatPacers(
            clock,
            min_interval=settings.edit_interval,
            group_calls=settings.group_edits_per_minute,
            group_window=group_window,
            budget=budget,
        )
        bot = self._app.bot
        self._notices = Notices(bot, pacers, clock)
        self._replies = ReplyRunner(
            bot,
            service,
            pacers,
            self._notices,
            clock,
            options=ReplyOptions(
                reasoning=chat.reasoning,
                delivery=DeliveryOptions(settings.edit_interval, tick_interval, final_timeout),
                use_drafts=use_drafts,
                regenerate_button=chat.regenerate_button,
            ),
        )
        turns = TurnReader(bot, TurnComposer(chat))
        self._commands = Commands(
            service,
            self._access,
            self._notices,
            self._replies,
            turns,
            identity=self._identity,
            metrics=metrics,
            reloader=reloader,
        )
        self._add_handlers()
        live.subscribe(self._apply_settings)

    def _apply_settings(self, settings: Settings) -> None:
        """A reloaded edit interval: for answers started from now on."""
        self._replies.set_edit_interval(settings.telegram.edit_interval)
        self._pacers.set_min_interval(settings.telegram.edit_interval)

    @property
    def application(self) -> Application:
        return self._app

    @property
    def num_answering(self) -> int:
        """Answers being shown right now."""
        return self._replies.num_running

    @property
    def is_up(self) -> bool:
        """Started and taking updates (for /healthz)."""
        updater = self._app.updater
        receiving = self._settings.mode != "polling" or (updater is not None and updater.running)
        return self._app.running and receiving

    # Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the token (getMe), register the command menu, then take updates."""
        try:
            await self._initialize()
            bot = self._app.bot
            self._me = BotIdentity(bot.id, bot.username)
            await self._register_commands()
            await self._app.start()
            await self._start_receiving()
        except BaseException:
            await self._shutdown()
            raise
        log.info(
            "telegram: @%s is %s",
            self._me.username,
            "polling" if self._settings.mode == "polling" else "on its webhook",
        )

    async def announce_interrupted(self, interrupted: Sequence[InterruptedReply]) -> None:
        """Each answer a killed bot left cut in a Telegram chat gets the restart note there."""
        await self._replies.announce_interrupted(interrupted)

    async def stop_receiving(self) -> None:
        """Take no new updates; answers being shown go on."""
        updater = self._app.updater
        if updater is not None and updater.running:
            await updater.stop()

    async def close(self) -> None:
        """Land every answer (the text so far and a note if cut short), then disconnect."""
        await self.stop_receiving()
        await self._replies.close(timeout=self._close_timeout)
        await self._shutdown()

    async def _initialize(self) -> None:
        try:
            await self._app.initialize()
        except InvalidToken:
            raise ConfigError("[telegram] token: Telegram refused the bot token") from None
        except NetworkError as error:
            host = urlsplit(self._settings.base_url).netloc
            raise ConfigError(
                f"[telegram] cannot reach the Bot API at {host} ({error.message}); "
                "check base_url and proxy"
            ) from None

    async def _register_commands(self) -> None:
        bot = self._app.bot
        try:
            for scope, for_groups in (
                (BotCommandScopeDefault(), False),
                (BotCommandScopeAllGroupChats(), True),
            ):
                await bot.set_my_commands(bot_commands(for_groups=for_groups), scope=scope)
        except TelegramError as error:
            log.warning("telegram: command menu not registered: %s", error.message)

    async def _start_receiving(self) -> None:
        updater = self._app.updater
        assert updater is not None
        if self._settings.mode == "polling":
            await updater.start_polling(
                timeout=int(self._poll_timeout), allowed_updates=ALLOWED_UPDATES
            )
            return
        url = self._settings.webhook_url
        try:
            await updater.start_webhook(
                listen=self._settings.webhook_listen,
                port=self._settings.webhook_port,
                url_path=urlsplit(url).path.lstrip("/"),
                webhook_url=url,
                secret_token=self._webhook_secret,
                allowed_updates=ALLOWED_UPDATES,
            )
        except OSError as error:  # the port is taken, or the address is not this machine's
            raise ConfigError(
                f"telegram.webhook_port: cannot listen on {self._settings.webhook_listen}:"
                f"{self._settings.webhook_port}: {error.strerror or error}"
            ) from None
        except RuntimeError as error:
            if "webhooks" not in str(error):
                raise
            raise ConfigError(
                '[telegram] mode = "webhook" needs: pip install "python-telegram-bot[webhooks]"'
            ) from None

    async def _shutdown(self) -> None:
        try:
            if self._app.running:
                await self._app.stop()
            await self._app.shutdown()
        finally:
            self._redaction.remove()

    # Building -------------------------------------------------------------------------------

    @staticmethod
    def _build_application(settings: TelegramSettings, on_error: ErrorCounter) -> Application:
        proxy = settings.proxy or None  # validated by the config loader
        return (
            Application.builder()
            .token(settings.token)
            .base_url(settings.base_url)
            .base_file_url(file_url_for(settings.base_url))
            # One user's long answer never holds up another user's message or command.
            .concurrent_updates(True)
            .request(
                CountingRequest(on_error, connection_pool_size=512, pool_timeout=10.0, proxy=proxy)
            )
            .get_updates_request(CountingRequest(on_error, connection_pool_size=1, proxy=proxy))
            .build()
        )

    def _count_error(self, kind: PlatformErrorKind) -> None:
        if self._metrics is not None:
            self._metrics.count_platform_error(PLATFORM, kind)

    def _add_handlers(self) -> None:
        app = self._app
        app.add_handler(CallbackQueryHandler(self._on_button, pattern=f"^{STOP_PREFIX}"))
        answer_buttons = f"^({REGENERATE_PREFIX}|{CONTINUE_PREFIX})"
        app.add_handler(CallbackQueryHandler(self._on_answer_button, pattern=answer_buttons))
        self._commands.add_to(app)  # commands, then the messages that ask something
        app.add_error_handler(self._on_error)

    # Handlers -------------------------------------------------------------------------------

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None or query.data is None:
            return
        user_id = query.from_user.id
        toast = self._replies.stop_by_button(
            query.data, user_id, is_admin=self._access.is_admin(user_id)
        )
        try:
            await query.answer(toast)
        except TelegramError as error:
            log.info("telegram: button press not answered: %s", error.message)

    async def _on_answer_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None or query.data is None:
            return
        user_id = query.from_user.id
        answer = query.message if isinstance(query.message, Message) else None
        toast = await self._replies.answer_button(
            query.data, user_id, answer, is_allowed=self._access.is_allowed(user_id)
        )
        try:
            await query.answer(toast)
        except TelegramError as error:
            log.info("telegram: button press not answered: %s", error.message)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        log.error("telegram: handling an update failed: %r", error, exc_info=error)

    def _identity(self) -> BotIdentity:
        if self._me is None:  # updates arrive only after start()
            bot = self._app.bot
            self._me = BotIdentity(bot.id, bot.username)
        return self._me
