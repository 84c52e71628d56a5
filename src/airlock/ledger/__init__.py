"""The ledger: what a call cost. (So far: inference prices in effect on a day, and the cost of one call.)"""

from airlock.ledger.prices import call_cost, find_model, price_in_effect

__all__ = ["call_cost", "find_model", "price_in_effect"]
