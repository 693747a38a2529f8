"""The server's half of the table of services hosts exactly the API's services, each in a health group."""

from embedsvc import api
from embedsvc.transport import services
from embedsvc.transport.services import HOSTED, Health


def test_the_server_hosts_exactly_the_services_of_the_table():
    hosted = [h.service for h in HOSTED]
    assert len(hosted) == len(set(hosted))
    assert set(hosted) == set(api.SERVICES)


def test_health_groups_split_the_hosted_services():
    always, models = services.names(Health.ALWAYS), services.names(Health.MODELS)
    assert not set(always) & set(models)
    assert set(always) | set(models) == {s.full_name for s in api.SERVICES}
    # Listing models and servers, and operations, must answer while models load.
    assert {api.SERVER.full_name, api.MODELS.full_name, api.OPERATIONS.full_name} <= set(always)
