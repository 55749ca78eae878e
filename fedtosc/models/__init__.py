"""Models: the on-device student codec and the server's teachers."""

from fedtosc.models.student import StudentCodec, StudentOutput, build_student
from fedtosc.models.teachers import (
    ClipTeacher,
    ServerCNNTeacher,
    Teacher,
    TeacherError,
    build_clip_teacher,
    load_or_train_server_teacher,
    predict,
)

__all__ = [
    "ClipTeacher",
    "ServerCNNTeacher",
    "StudentCodec",
    "StudentOutput",
    "Teacher",
    "TeacherError",
    "build_clip_teacher",
    "build_student",
    "load_or_train_server_teacher",
    "predict",
]
