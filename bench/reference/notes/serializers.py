from django.db import transaction
from rest_framework import serializers

from bench.reference.notes.models import Note, Recipient


class NoteSerializer(serializers.ModelSerializer):
    recipient_phone_number = serializers.CharField(write_only=True, max_length=20)

    class Meta:
        model = Note
        fields = ["id", "recipient_phone_number", "seq", "content", "created_at"]
        read_only_fields = ["id", "seq", "created_at"]

    def create(self, validated_data):
        phone = validated_data.pop("recipient_phone_number")
        with transaction.atomic():
            try:
                recipient = Recipient.objects.select_for_update().get(phone=phone)
            except Recipient.DoesNotExist:
                raise serializers.ValidationError({"recipient_phone_number": "unknown"}) from None
            recipient.last_seq += 1
            recipient.save(update_fields=["last_seq"])
            return Note.objects.create(recipient=recipient, seq=recipient.last_seq, **validated_data)
