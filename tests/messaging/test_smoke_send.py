import pytest

from apps.messaging.models import Message, Status


@pytest.mark.django_db(transaction=True)
def test_send_persists_queued_message_with_first_seq(sender_client, mobile_user, redis):
    response = sender_client.post(
        "/api/v1/messages/",
        {"recipient_phone_number": mobile_user.phone_number, "content": "hi"},
        format="json",
    )
    assert response.status_code == 202, response.content
    message = Message.objects.get()
    assert (message.seq, message.status) == (1, Status.QUEUED)
    assert response.json()["id"] == str(message.id)
