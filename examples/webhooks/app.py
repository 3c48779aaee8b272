"""An ecos webhooks backend (docs/webhooks.md): lets in the users of this Flask
app's session cookie, and places orders for them."""
import hashlib, hmac, itertools, os, time
from http.cookies import SimpleCookie

from flask import Flask, abort, jsonify, request, session
from itsdangerous import BadData

app = Flask(__name__)
app.secret_key = os.environ["FLASK_SECRET_KEY"]
ECOS_SECRET = os.environ["ECOS_WEBHOOKS_SECRET"].encode()  # ecos's webhooks.secret
order_ids = itertools.count(1)

def verified(req) -> bool:
    fields = dict(part.partition("=")[::2] for part in req.headers.get("X-Ecos-Signature", "").split(","))
    t, v1 = fields.get("t", ""), fields.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > 300:
        return False
    expected = hmac.new(ECOS_SECRET, t.encode() + b"." + req.get_data(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, v1)

def user_of(cookie_header: str):
    """The user of the Flask session cookie in a forwarded Cookie header, or None."""
    morsel = SimpleCookie(cookie_header).get(app.config["SESSION_COOKIE_NAME"])
    signer = app.session_interface.get_signing_serializer(app)
    try:
        return signer.loads(morsel.value, max_age=app.permanent_session_lifetime.total_seconds()).get("user")
    except (AttributeError, BadData):  # no cookie, or a forged or expired one
        return None

@app.post("/login")
def login():
    session["user"] = request.form["user"]  # a real app checks a password first
    return "", 204

@app.post("/ecos")
def ecos_hook():
    if not verified(request):
        abort(401)
    hook = request.get_json()
    if hook["type"] == "connect":
        user = user_of(hook["headers"].get("cookie", ""))
        if not user:
            return jsonify(allow=False, reason="no session")
        return jsonify(allow=True, user=user, rooms=[f"orders:{user}"])
    if hook["type"] == "event" and hook["event"] == "order:place":
        order = hook["args"][0] if hook["args"] and isinstance(hook["args"][0], dict) else {}
        if not isinstance(order.get("qty"), int) or not 1 <= order["qty"] <= 99:
            return jsonify(ok=False, error="qty must be 1 to 99")
        return jsonify(ok=True, order={"id": next(order_ids), "item": order.get("item"),
                                       "qty": order["qty"], "user": hook["socket"]["user"]})
    return jsonify(ok=True)  # a disconnect: nothing to clean up in this app
