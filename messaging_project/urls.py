from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.media import apis as media
from apps.ops import apis as ops
from apps.ops import views as ops_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("apps.messaging.urls")),
    path("api/v1/", include("apps.accounts.urls")),
    path("api/v1/", include("apps.media.urls")),
    path("api/v1/", include("apps.devices.urls")),
    path("api/v1/", include("apps.conversations.urls")),
    path("api/v1/", include("apps.privacy.urls")),
    path("api/v1/", include("apps.webhooks.urls")),
    path("media/d/<str:token>/", media.download, name="media-download"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("health/live", ops.live, name="health-live"),
    path("health/ready", ops.ready, name="health-ready"),
    path("metrics", ops.metrics, name="metrics"),
    path("ops/", ops_views.ops_dashboard, name="ops-dashboard"),
    path("ops/stats.json", ops_views.ops_stats, name="ops-stats"),
    path("simulator/", ops_views.simulator, name="simulator"),
]

handler404 = "apps.ops.apis.not_found"
handler500 = "apps.ops.apis.server_error"
