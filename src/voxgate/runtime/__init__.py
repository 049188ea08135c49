"""The channel-agnostic conversation engine: sessions, intents, slots, actions through connectors, answers."""
