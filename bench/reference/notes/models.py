from django.db import models


class Recipient(models.Model):
    phone = models.CharField(max_length=20, unique=True)
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return self.phone


class Note(models.Model):
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="notes")
    seq = models.BigIntegerField()
    content = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["recipient", "seq"], name="note_recipient_seq")]

    def __str__(self) -> str:
        return f"{self.recipient_id}#{self.seq}"
