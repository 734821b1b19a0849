"""Fifty forced tool calls: varied prompts and input schemas (nested objects, arrays, enums,
numbers, integers, booleans, required and optional fields). ``benchmarks/tools.py`` runs all
fifty; the library tests run :func:`covering`'s few, which use every schema construct of the
fifty at least twice. ``jsonschema`` judges every generated input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolCase:
    prompt: str
    name: str
    description: str
    schema: dict[str, Any]

    @property
    def tool(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.schema}


def obj(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741
N = {"type": "number"}
B = {"type": "boolean"}


def enum(*values: Any) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def array(items: dict[str, Any], **bounds: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **bounds}


UNIT = enum("celsius", "fahrenheit")

CASES: list[ToolCase] = [
    ToolCase(
        "What's the weather in Paris?",
        "get_weather",
        "Current weather for a city",
        obj(["city"], city=S, unit=UNIT),
    ),
    ToolCase(
        "Weather forecast for Tokyo for the next 5 days, please.",
        "get_forecast",
        "Daily forecast",
        obj(["city", "days"], city=S, days={**I, "minimum": 1, "maximum": 14}),
    ),
    ToolCase(
        "Convert 100 US dollars to euros.",
        "convert_currency",
        "Convert money",
        obj(["amount", "from", "to"], amount=N, **{"from": S, "to": S}),
    ),
    ToolCase("Add 17 and 25.", "add", "Add two numbers", obj(["a", "b"], a=N, b=N)),
    ToolCase(
        "Set an alarm for 7:30 tomorrow morning.",
        "set_alarm",
        "Set an alarm",
        obj(
            ["hour", "minute"],
            hour={**I, "minimum": 0, "maximum": 23},
            minute={**I, "minimum": 0, "maximum": 59},
            label=S,
        ),
    ),
    ToolCase(
        "Send an email to bob@example.com saying the meeting moved to 3pm.",
        "send_email",
        "Send an email",
        obj(["to", "subject", "body"], to=S, subject=S, body=S, urgent=B),
    ),
    ToolCase(
        "Search the web for the tallest building in the world.",
        "web_search",
        "Search the web",
        obj(["query"], query=S, max_results={**I, "minimum": 1, "maximum": 10}),
    ),
    ToolCase(
        "Turn off the living room lights.",
        "set_lights",
        "Switch lights",
        obj(["room", "on"], room=enum("kitchen", "living room", "bedroom"), on=B),
    ),
    ToolCase(
        "Book a table for 4 people at 8pm at Luigi's.",
        "book_table",
        "Book a restaurant",
        obj(["restaurant", "people", "time"], restaurant=S, people={**I, "minimum": 1}, time=S),
    ),
    ToolCase(
        "Translate 'good morning' into Spanish.",
        "translate",
        "Translate text",
        obj(["text", "target"], text=S, target=enum("es", "fr", "de", "it")),
    ),
    ToolCase(
        "Create a shopping list with milk, eggs and bread.",
        "create_list",
        "Create a list",
        obj(["title", "items"], title=S, items=array(S)),
    ),
    ToolCase(
        "Play some jazz music in the kitchen.",
        "play_music",
        "Play music",
        obj(
            ["genre"],
            genre=enum("jazz", "rock", "pop", "classical"),
            room=S,
            volume={**I, "minimum": 0, "maximum": 100},
        ),
    ),
    ToolCase(
        "What is the square root of 144?",
        "calculate",
        "Evaluate an expression",
        obj(["expression"], expression=S),
    ),
    ToolCase(
        "Remind me to call mom on Sunday.",
        "create_reminder",
        "Create a reminder",
        obj(
            ["text", "day"],
            text=S,
            day=enum("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
        ),
    ),
    ToolCase(
        "Find flights from London to New York on June 3rd.",
        "search_flights",
        "Search flights",
        obj(["origin", "destination", "date"], origin=S, destination=S, date=S, nonstop=B),
    ),
    ToolCase(
        "Order two large pepperoni pizzas.",
        "order_pizza",
        "Order pizza",
        obj(
            ["size", "toppings", "quantity"],
            size=enum("small", "medium", "large"),
            toppings=array(S, maxItems=5),
            quantity=I,
        ),
    ),
    ToolCase(
        "Get the stock price of Apple.",
        "get_stock_price",
        "Latest stock price",
        obj(["symbol"], symbol=S),
    ),
    ToolCase(
        "Schedule a meeting with Ann and Raj on Friday at 10.",
        "schedule_meeting",
        "Schedule a meeting",
        obj(["attendees", "day", "hour"], attendees=array(S), day=S, hour=I),
    ),
    ToolCase(
        "Set the thermostat to 21.5 degrees.",
        "set_thermostat",
        "Set temperature",
        obj(["temperature"], temperature=N, mode=enum("heat", "cool", "auto")),
    ),
    ToolCase(
        "Look up the definition of 'serendipity'.",
        "define_word",
        "Dictionary lookup",
        obj(["word"], word=S, language=S),
    ),
    ToolCase(
        "Create a user named Alice, age 30, who is an admin.",
        "create_user",
        "Create a user account",
        obj(["user"], user=obj(["name", "age"], name=S, age=I, admin=B)),
    ),
    ToolCase(
        "Ship the package to 12 Baker Street, London, NW1.",
        "ship_package",
        "Ship a package",
        obj(["address"], address=obj(["street", "city"], street=S, city=S, postcode=S), express=B),
    ),
    ToolCase(
        "Rate the movie Inception 5 stars.",
        "rate_movie",
        "Rate a movie",
        obj(["title", "stars"], title=S, stars={**I, "minimum": 1, "maximum": 5}),
    ),
    ToolCase(
        "Log a run of 5.2 km in 28 minutes.",
        "log_workout",
        "Log exercise",
        obj(
            ["kind", "distance_km", "minutes"],
            kind=enum("run", "swim", "bike"),
            distance_km=N,
            minutes=I,
        ),
    ),
    ToolCase(
        "Add a todo: buy flowers, high priority.",
        "add_todo",
        "Add a todo item",
        obj(["title"], title=S, priority=enum("low", "medium", "high"), done=B),
    ),
    ToolCase(
        "Get me the news about science.",
        "get_news",
        "Latest headlines",
        obj(
            ["topic"],
            topic=enum("world", "science", "sports", "business"),
            count={**I, "minimum": 1, "maximum": 20},
        ),
    ),
    ToolCase(
        "What time is it in Sydney?",
        "get_time",
        "Current time in a timezone",
        obj(["timezone"], timezone=S),
    ),
    ToolCase(
        "Draw a red circle with radius 5 at the origin.",
        "draw_shape",
        "Draw a shape",
        obj(
            ["shape", "color", "position"],
            shape=enum("circle", "square", "triangle"),
            color=S,
            size=N,
            position=obj(["x", "y"], x=N, y=N),
        ),
    ),
    ToolCase(
        "Tag this photo with beach, sunset and family.",
        "tag_photo",
        "Tag a photo",
        obj(["photo_id", "tags"], photo_id=S, tags=array(S, minItems=1, maxItems=6)),
    ),
    ToolCase(
        "Open a support ticket: my laptop won't boot.",
        "open_ticket",
        "Support ticket",
        obj(
            ["summary", "severity"],
            summary=S,
            severity=enum("low", "normal", "critical"),
            contact=obj(None, email=S, phone=S),
        ),
    ),
    ToolCase(
        "Split a bill of 84 dollars between 3 people.",
        "split_bill",
        "Split a bill",
        obj(["total", "people"], total=N, people={**I, "minimum": 1}, tip_percent=N),
    ),
    ToolCase(
        "Find Italian restaurants near me that are open now.",
        "find_restaurants",
        "Find restaurants",
        obj(["cuisine"], cuisine=S, open_now=B, price=enum("$", "$$", "$$$")),
    ),
    ToolCase(
        "Record my blood pressure: 120 over 80.",
        "record_vitals",
        "Record vitals",
        obj(["systolic", "diastolic"], systolic=I, diastolic=I, notes=S),
    ),
    ToolCase(
        "Make a playlist called Focus with three lo-fi songs.",
        "create_playlist",
        "Create a playlist",
        obj(["name", "songs"], name=S, songs=array(obj(["title"], title=S, artist=S), maxItems=5)),
    ),
    ToolCase("Check whether 97 is a prime number.", "is_prime", "Primality check", obj(["n"], n=I)),
    ToolCase(
        "Lock the front door.",
        "lock_door",
        "Lock or unlock a door",
        obj(["door", "locked"], door=enum("front", "back", "garage"), locked=B),
    ),
    ToolCase(
        "Compute the average of 3, 7, 8 and 10.",
        "average",
        "Average of numbers",
        obj(["numbers"], numbers=array(N, minItems=1)),
    ),
    ToolCase(
        "Rename the file report.txt to final.txt.",
        "rename_file",
        "Rename a file",
        obj(["old_name", "new_name"], old_name=S, new_name=S, overwrite=B),
    ),
    ToolCase(
        "Give me directions from the station to the museum by foot.",
        "get_directions",
        "Route planner",
        obj(
            ["origin", "destination", "mode"],
            origin=S,
            destination=S,
            mode=enum("walking", "driving", "transit"),
        ),
    ),
    ToolCase(
        "Subscribe me to the weekly newsletter.",
        "subscribe",
        "Newsletter subscription",
        obj(["frequency"], frequency=enum("daily", "weekly", "monthly"), topics=array(S)),
    ),
    ToolCase(
        "Resize the image to 800 by 600 pixels.",
        "resize_image",
        "Resize an image",
        obj(
            ["width", "height"],
            width={**I, "minimum": 1},
            height={**I, "minimum": 1},
            keep_aspect=B,
        ),
    ),
    ToolCase(
        "Start a 25 minute timer for studying.",
        "start_timer",
        "Start a timer",
        obj(["minutes"], minutes={**I, "minimum": 1, "maximum": 180}, label=S),
    ),
    ToolCase(
        "Post a tweet: Hello world from streamchat!",
        "post_message",
        "Post a message",
        obj(["text"], text={**S, "maxLength": 280}, channel=enum("twitter", "mastodon")),
    ),
    ToolCase(
        "Add Jane Doe, phone 555-1234, to my contacts.",
        "add_contact",
        "Add a contact",
        obj(
            ["name"],
            name=S,
            phones=array(
                obj(["number"], number=S, kind=enum("home", "work", "mobile")), maxItems=3
            ),
            favorite=B,
        ),
    ),
    ToolCase(
        "Water the garden zone 2 for 15 minutes.",
        "water_garden",
        "Irrigation",
        obj(["zone", "minutes"], zone={**I, "minimum": 1, "maximum": 8}, minutes=I),
    ),
    ToolCase(
        "Find hotels in Rome for 2 adults from May 1 to May 4.",
        "search_hotels",
        "Hotel search",
        obj(
            ["city", "guests", "stay"],
            city=S,
            guests=obj(["adults"], adults=I, children=I),
            stay=obj(["check_in", "check_out"], check_in=S, check_out=S),
        ),
    ),
    ToolCase(
        "Is it going to rain in Berlin tomorrow? Answer with a probability.",
        "rain_probability",
        "Chance of rain",
        obj(["city", "probability"], city=S, probability=N),
    ),
    ToolCase(
        "Create an invoice for 3 hours of consulting at 120 per hour.",
        "create_invoice",
        "Create an invoice",
        obj(
            ["lines", "currency"],
            lines=array(
                obj(
                    ["description", "quantity", "unit_price"],
                    description=S,
                    quantity=N,
                    unit_price=N,
                ),
                minItems=1,
                maxItems=4,
            ),
            currency=enum("USD", "EUR", "GBP"),
        ),
    ),
    ToolCase(
        "Mute notifications for 2 hours.",
        "mute_notifications",
        "Do not disturb",
        obj(["hours"], hours=N, allow_calls=B),
    ),
    ToolCase(
        "Describe the configuration: debug on, 4 workers, log level warning.",
        "set_config",
        "Update configuration",
        obj(
            ["settings"],
            settings=obj(
                ["debug", "workers", "log_level"],
                debug=B,
                workers=I,
                log_level=enum("debug", "info", "warning", "error"),
            ),
            tags={"type": ["array", "null"], "items": S},
        ),
    ),
]

assert len(CASES) == 50
assert len({case.name for case in CASES}) == len(CASES)


def features(schema: dict[str, Any], path: str = "") -> set[str]:
    """The JSON Schema constructs a case's grammar is built from: each type, and each way of
    bounding, choosing or nesting it (an enum, an integer range, an array of objects...)."""
    found: set[str] = set()
    kind = schema.get("type")
    if isinstance(kind, list):
        found.add("type list:" + "+".join(sorted(kind)))
        kind = next(k for k in kind if k != "null")
    found.add(f"{kind} (nested)" if kind == "object" and path else str(kind))
    for keyword in ("enum", "maxLength", "minItems", "maxItems"):
        if keyword in schema:
            found.add(f"{kind} {keyword}")
    if kind == "integer" and ("minimum" in schema or "maximum" in schema):
        found.add("integer range" if "maximum" in schema else "integer minimum")
    if kind == "array":
        items = schema["items"]
        found.add(f"array of {items.get('type')}")
        found |= features(items, path + "/items")
    if kind == "object":
        required = set(schema.get("required", []))
        for name, value in schema["properties"].items():
            found.add("optional property" if name not in required else "required property")
            found |= features(value, f"{path}/{name}")
    return found


def covering(cases: list[ToolCase], times: int = 2) -> list[ToolCase]:
    """A few cases that together use every construct of ``cases``, each at least ``times``
    (when that many use it): the same grammar features, at a fraction of the cost."""
    uses = [features(case.schema) for case in cases]
    need = {f: min(times, sum(f in used for used in uses)) for used in uses for f in used}
    chosen: list[ToolCase] = []
    while any(need.values()):
        best = max(
            (c for c in cases if c not in chosen),
            key=lambda c: sum(1 for f in features(c.schema) if need.get(f)),
        )
        chosen.append(best)
        for f in features(best.schema):
            need[f] = max(0, need[f] - 1)
    return sorted(chosen, key=cases.index)
