from __future__ import annotations

from django.urls import include, path

from . import views

urlpatterns = [
    path("hello/<str:name>", views.hello),
    path("whoami", views.whoami),
    path("whoami-async", views.whoami_async),
    path("boom", views.boom),
    path("form", views.form),
    path("unavailable", views.unavailable),
    path("signup", views.signup),
    path("publish-task", views.publish_task),
    path("", include("backend_kit.django.urls")),
]
