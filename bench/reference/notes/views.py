from rest_framework.generics import CreateAPIView

from bench.reference.notes.serializers import NoteSerializer


class NoteCreate(CreateAPIView):
    serializer_class = NoteSerializer
