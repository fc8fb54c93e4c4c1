from django.urls import path

from bench.reference.notes.views import NoteCreate

urlpatterns = [path("notes/", NoteCreate.as_view())]
