"""Template context: what the signed-in user may do, so pages show only what they allow."""

from review.roles import user_abilities, user_roles


def workspace(request) -> dict:
    user = getattr(request, "user", None)
    if user is None:
        return {}
    return {
        "abilities": {a.value for a in user_abilities(user)},
        "roles": sorted(r.value for r in user_roles(user)),
    }
