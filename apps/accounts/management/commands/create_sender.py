from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.models import Tier
from apps.accounts.services import sender_create, token_create


class Command(BaseCommand):
    help = "Create a sender (business user) and print its API token on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--tier", choices=Tier.values, default=Tier.BASIC)
        parser.add_argument("--broadcast", action="store_true", help="grant the send_broadcast permission")
        parser.add_argument(
            "--operator", action="store_true", help="grant the manage_dead_letters permission"
        )

    def handle(self, *args, **options) -> None:
        extra = []
        if options["broadcast"]:
            extra.append("send_broadcast")
        if options["operator"]:
            extra.append("manage_dead_letters")
        try:
            user = sender_create(username=options["username"], tier=options["tier"], permissions=tuple(extra))
        except Exception as exc:
            raise CommandError(str(exc)) from exc
        key = token_create(owner=user)
        self.stdout.write(f"Created sender {user.username} (tier {user.tier}, id {user.pk}).")
        self.stdout.write(key)
