"""Factories for every model the tests build; one place, so personas stay consistent."""

from __future__ import annotations

import factory
from django.contrib.auth.models import Permission
from django.db.models import F
from django.utils import timezone

from apps.accounts.models import MobileUser, User
from apps.accounts.services import SENDER_DEFAULT_PERMISSIONS
from apps.conversations.models import Conversation
from apps.messaging.models import Message, Status


class SenderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"sender{n}")
    tier = "basic"

    @factory.post_generation
    def permissions(self, create, extracted, **kwargs):
        codenames = set(SENDER_DEFAULT_PERMISSIONS) | set(extracted or ())
        self.user_permissions.set(
            Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames)
        )


class MobileUserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MobileUser

    # +1 415 555 01xx numbers are valid for libphonenumber and reserved for fiction.
    phone_number = factory.Sequence(lambda n: f"+1415555{n % 10000:04d}")
    name = factory.Faker("first_name")


class MessageFactory(factory.django.DjangoModelFactory):
    """A stored message. Use services.message_send in tests that exercise sending itself."""

    class Meta:
        model = Message

    sender = factory.SubFactory(SenderFactory)
    recipient = factory.SubFactory(MobileUserFactory)
    content = factory.Faker("sentence")
    status = Status.QUEUED
    next_attempt_at = factory.LazyFunction(timezone.now)

    @factory.lazy_attribute
    def seq(self):
        if self.status == Status.SCHEDULED:
            return None  # takes one when it becomes due
        # Mirror message_send: take the recipient's next number.
        MobileUser.objects.filter(pk=self.recipient.pk).update(last_seq=F("last_seq") + 1)
        return MobileUser.objects.values_list("last_seq", flat=True).get(pk=self.recipient.pk)


class ConversationFactory(factory.django.DjangoModelFactory):
    """An open conversation. Send into it with conversations.services, never by factory."""

    class Meta:
        model = Conversation

    business = factory.SubFactory(SenderFactory)
    mobile = factory.SubFactory(MobileUserFactory)
