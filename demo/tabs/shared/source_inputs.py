"""The source inputs that the matrix, map and search tabs share for sets that are not the shapes world."""

from __future__ import annotations

import gradio as gr


def upload_and_dataset_inputs():
    """The inputs the matrix and map tabs share for non-shapes sets: an upload box and a
    'datasets source' accordion. Returns (files, dataset name, split, image column, text column)."""
    files = gr.File(file_count="multiple", file_types=["image"], label="images (for 'uploaded images')", height=200)
    with gr.Accordion("datasets source", open=False):
        ds_name = gr.Textbox(label="dataset (Hub name or allowed local folder)")
        ds_split = gr.Textbox("train", label="split")
        with gr.Row():
            img_col = gr.Textbox("image", label="image column")
            txt_col = gr.Textbox("text", label="text column")
    return files, ds_name, ds_split, img_col, txt_col
