"""The app's platform: configuration, context, services, the handler contract, scheduling, the guard."""
