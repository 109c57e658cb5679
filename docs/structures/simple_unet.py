"""Structure file of the U-Net in paul-vdl/ImageGenerationDiffusionModels.jl (trained_model.bson,
commit 8b5719da): `struct SimpleUNet` and its forward `(m::SimpleUNet)(x_and_emb)`, read in
that repository's src/generate_images.jl (MIT licence) and written again here with the
struct's fields (docs/flux.md#structure-files).

    porting convert trained_model.bson --structure simple_unet.py --input-size 28,28,129 \
        -o unet.keras --verify

The forward first tiles the timestep embedding `t_emb` (128 values per sample) over the
image and joins it to the image's channels, `cat(x, tmap; dims=3)`: that array (1 + 128 = 129
channels, what `down1`'s first Conv reads) is the converted model's input; the tiling stays
with the caller (in Keras: broadcast the embedding to (H, W, 128) and concatenate it after the
image's channel). The forward also crops the skip, `h1[1:H, 1:W, :, :]` with H, W the size of
`up2`'s output: for even input sizes that is all of `h1` (MaxPool halves, ConvTranspose with
stride 2 doubles), for odd ones it drops a row and a column, which is not converted: the
join is refused there, so give even sizes.
"""

from porting.flux.structure import Struct, cat

unet = Struct("SimpleUNet", "down1", "down2", "mid", "up2", "up1", "final")

h1 = unet.down1(unet.input)  # down1(cat(x, tmap; dims=3))
h2 = unet.down2(h1)
h3 = unet.mid(h2)
up_h3 = unet.up2(h3)
up = unet.up1(cat(up_h3, h1, dims=3))  # h1[1:H, 1:W, :, :] is h1 for even H, W
model = unet.final(up)
