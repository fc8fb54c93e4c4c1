from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, transaction

from apps.accounts.services import mobile_user_create, token_create


class Command(BaseCommand):
    help = "Create a mobile user by E.164 phone number and print its API token on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("phone_number")
        parser.add_argument("--name", default="")

    def handle(self, *args, **options) -> None:
        try:
            # A savepoint, so the duplicate's IntegrityError does not break a caller's transaction.
            with transaction.atomic():
                mobile = mobile_user_create(phone_number=options["phone_number"], name=options["name"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        except IntegrityError as exc:
            raise CommandError(f"{options['phone_number']} is already registered") from exc
        key = token_create(owner=mobile)
        self.stdout.write(f"Created mobile user {mobile.phone_number} (id {mobile.pk}).")
        self.stdout.write(key)
