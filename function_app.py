"""Composition root: the Durable Functions app and its blueprints. Nothing else lives here."""

import azure.durable_functions as df
import azure.functions as func

from activities.functions import bp as activities
from adapters.redaction import install_redaction
from orchestrations.detection import bp as orchestrations
from triggers.blobdoor import bp as blob_door
from triggers.download import bp as download_door
from triggers.http import bp as http_doors
from triggers.status_door import bp as status_door
from triggers.v4 import bp as v4_doors

install_redaction()  # no SAS, key or token reaches a log handler
app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(http_doors)
app.register_functions(status_door)
app.register_functions(v4_doors)  # anonymous at the host: own checks (issue 11)
app.register_functions(download_door)  # anonymous at the host: signed links (issue 11)
app.register_functions(blob_door)
app.register_functions(orchestrations)
app.register_functions(activities)
