"""The ledger: what a task cost, in line items. Inference is priced from the record at report time (the
price in effect when each call was served); other costs arrive as posted line items or span attributes;
Airlock's own storage is measured from its data directory."""

from airlock.ledger.items import LedgerItems, LineItemIn
from airlock.ledger.lines import build_bill
from airlock.ledger.prices import call_cost, find_model, price_in_effect, price_rows
from airlock.ledger.report import DIMENSIONS, CostReport, CostRow, cost_report
from airlock.store.ledger import Bill

__all__ = [
    "DIMENSIONS",
    "Bill",
    "CostReport",
    "CostRow",
    "LedgerItems",
    "LineItemIn",
    "build_bill",
    "call_cost",
    "cost_report",
    "find_model",
    "price_in_effect",
    "price_rows",
]
