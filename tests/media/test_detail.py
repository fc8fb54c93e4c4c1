"""GET and DELETE /api/v1/media/{id}/: only the uploader sees or deletes; attached media stay."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from apps.media import tasks
from apps.media.models import Media
from apps.messaging import services as messaging
from tests.factories import SenderFactory

from .conftest import image_bytes, keys_in_storage, pdf_bytes, upload


def post(client, content: bytes, name: str = "f.bin") -> dict:
    response = client.post("/api/v1/media/", {"file": upload(content, name)}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def test_uploader_sees_its_media(sender_client):
    body = post(sender_client, pdf_bytes(), "terms.pdf")

    shown = sender_client.get(f"/api/v1/media/{body['id']}/")

    assert shown.status_code == 200
    expected = {k: v for k, v in body.items() if k not in ("url", "url_expires_at")}
    assert {k: v for k, v in shown.json().items() if k not in ("url", "url_expires_at")} == expected


@pytest.mark.parametrize("method", ["get", "delete"])
def test_another_users_media_is_404_and_untouched(sender_client, other_sender_client, mobile_client, method):
    body = post(sender_client, pdf_bytes())

    for stranger in (other_sender_client, mobile_client):
        response = getattr(stranger, method)(f"/api/v1/media/{body['id']}/")
        assert response.status_code == 404
        assert response.json() == {"detail": "No media with this id among yours."}
    assert Media.objects.filter(pk=body["id"]).exists()


@pytest.mark.parametrize("media_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000", "²"])
def test_unknown_or_malformed_id_is_404(sender_client, media_id):
    assert sender_client.get(f"/api/v1/media/{media_id}/").status_code == 404
    assert sender_client.delete(f"/api/v1/media/{media_id}/").status_code == 404


def test_delete_removes_file_thumbnails_and_row(
    sender_client, backend, request, django_capture_on_commit_callbacks
):
    body = post(sender_client, image_bytes("PNG", size=(500, 400)))
    tasks.make_thumbnails.apply(args=[body["id"]])
    assert len(keys_in_storage(backend, request)) == 4

    with django_capture_on_commit_callbacks(execute=True):
        response = sender_client.delete(f"/api/v1/media/{body['id']}/")

    assert response.status_code == 204
    assert not Media.objects.filter(pk=body["id"]).exists()
    assert keys_in_storage(backend, request) == []


def test_delete_while_processing_removes_thumbnails_written_later_too(
    sender_client, media_root, django_capture_on_commit_callbacks
):
    body = post(sender_client, image_bytes("PNG", size=(500, 400)))
    # A worker writes thumbnails but has not recorded them yet when the delete runs.
    from apps.media import services

    media = Media.objects.get(pk=body["id"])
    with media_root.joinpath(media.storage_key).open("rb") as file:
        rendered = services.thumbnails_render(file)
    for size, (data, _fmt) in rendered.items():
        services.storage().save(
            services.thumbnail_key(media.storage_key, size, "jpg"), services.ContentFile(data)
        )

    with django_capture_on_commit_callbacks(execute=True):
        assert sender_client.delete(f"/api/v1/media/{body['id']}/").status_code == 204

    assert [p for p in media_root.rglob("*") if p.is_file()] == []


def test_mobile_user_deletes_its_own_media(mobile_client, django_capture_on_commit_callbacks, media_root):
    body = post(mobile_client, pdf_bytes())

    with django_capture_on_commit_callbacks(execute=True):
        assert mobile_client.delete(f"/api/v1/media/{body['id']}/").status_code == 204

    assert not Media.objects.exists()
    assert [p for p in media_root.rglob("*") if p.is_file()] == []


def test_deleting_attached_media_is_409_and_keeps_everything(
    sender_client, sender, mobile_user, media_root, django_capture_on_commit_callbacks
):
    body = post(sender_client, pdf_bytes())
    message = messaging.message_send(
        sender=sender,
        recipient_phone_number=mobile_user.phone_number,
        content="see",
        attachment_ids=[body["id"]],
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = sender_client.delete(f"/api/v1/media/{body['id']}/")

    assert response.status_code == 409
    assert "attached" in response.json()["detail"]
    media = Media.objects.get(pk=body["id"])
    assert media.message_id == message.pk
    assert (media_root / media.storage_key).exists()


# --- admin ------------------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, db):
    staff = SenderFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_media"))
    client.force_login(staff)
    return client


def test_admin_lists_and_filters_media_read_only(staff_client, sender_client):
    image = post(sender_client, image_bytes("PNG"))
    document = post(sender_client, pdf_bytes(), "doc.pdf")

    listing = staff_client.get("/admin/media/media/", {"media_type__exact": "document"})
    assert listing.status_code == 200
    assert document["id"] in listing.content.decode()
    assert image["id"] not in listing.content.decode()
    assert staff_client.get("/admin/media/media/", {"status__exact": "processing"}).status_code == 200
    for term in (document["id"], "doc.pdf", "not a uuid"):
        assert staff_client.get("/admin/media/media/", {"q": term}).status_code == 200

    page = staff_client.get(f"/admin/media/media/{document['id']}/change/")
    assert page.status_code == 200
    assert "/media/d/" in page.content.decode()
    assert staff_client.get("/admin/media/media/add/").status_code == 403
    assert staff_client.post(f"/admin/media/media/{document['id']}/delete/").status_code == 403
    assert Media.objects.count() == 2


def test_admin_needs_a_staff_login(client, db):
    client.force_login(SenderFactory())  # not staff

    assert client.get("/admin/media/media/").status_code == 302
